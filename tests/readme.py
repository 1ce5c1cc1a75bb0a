"""The README's code blocks, read from the README itself, so the tests that run them cannot drift
from what users read."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from conftest import REPO

# a model factory for the README's `my_package.models:factory` (any factory(input_shape, num_classes))
MY_MODELS = '''\
from torch import nn


def factory(input_shape, num_classes):
    c, h, w = input_shape
    return nn.Sequential(nn.Conv2d(c, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * h * w, 32), nn.ReLU(),
                         nn.Linear(32, num_classes))
'''


def write_own_packages(folder: Path) -> Path:
    """`folder`/my_methods.py (the README's block) and `folder`/my_package/models.py (MY_MODELS): the
    own method and model the README's examples import. Returns `folder`, for sys.path or PYTHONPATH."""
    (folder / "my_package").mkdir(parents=True)
    (folder / "my_package" / "__init__.py").write_text("")
    (folder / "my_package" / "models.py").write_text(MY_MODELS)
    (folder / "my_methods.py").write_text(my_methods())
    return folder


def blocks(language: str) -> list[str]:
    text = (REPO / "README.md").read_text()
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)


def python_example(first_line: str) -> str:
    """The README's Python block whose first line is `first_line`."""
    found = [b for b in blocks("python") if b.splitlines()[0].strip() == first_line]
    assert len(found) == 1, f"README has {len(found)} python blocks starting with {first_line!r}"
    return found[0]


def my_methods() -> str:
    return python_example("# my_methods.py")


def cli_examples() -> list[str]:
    """Every `genefl ...` command line of the README's bash blocks (comments stripped)."""
    lines = []
    for block in blocks("bash"):
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("genefl "):
                lines.append(line)
    return lines


def bash_commands() -> list[str]:
    """Every command of the README's bash blocks, continuation lines joined, comments stripped."""
    commands = []
    for block in blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def tls_certificate_commands() -> list[str]:
    """The README's openssl commands that make the CA and the server certificate (run as written)."""
    return [c for c in bash_commands() if c.startswith(("openssl ", "printf \"subjectAltName"))]


def tls_superlink_command() -> list[str]:
    [command] = [c for c in bash_commands() if c.startswith("flower-superlink") and "--enable-supernode-auth" in c]
    return shlex.split(command)


def tls_node_flags() -> list[str]:
    """The README's first flower-supernode command's TLS and key flags (its address and node config
    are the test's own)."""
    command = next(c for c in bash_commands() if c.startswith("flower-supernode --superlink"))
    args, flags = shlex.split(command)[1:], []
    while args:
        flag = args.pop(0)
        value = args.pop(0)
        if flag not in ("--superlink", "--node-config"):
            flags += [flag, value]
    return flags
