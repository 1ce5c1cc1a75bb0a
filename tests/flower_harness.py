"""Start and stop real Flower processes on loopback for the tests (no mocks).

Every process is started in its own session and killed (with its children) at teardown, pass or
fail; FLWR_HOME is a temporary folder holding the connection config.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def flower_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(FLWR_HOME=str(home), FLWR_TELEMETRY_ENABLED="0", FLWR_DISABLE_UPDATE_CHECK="1",
               FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1", PYTHONUNBUFFERED="1",
               PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")  # Flower starts its helpers from PATH
    return env


def app_folder(root: Path) -> Path:
    """`root`/app: this checkout's Flower app as `flwr run` ships it (pyproject.toml and the files its
    `fab-include` patterns name), for `flwr run` to build the FAB from. Built from the checkout
    itself, the FAB is the same bytes (tests/test_flower_config.py checks) but `flwr run` first walks every
    file under it, the .venv the README makes there included (~51,000 files: 12 s per
    `flwr run`)."""
    app = root / "app"
    if not app.exists():
        include = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["fab-include"]
        for source in [REPO / "pyproject.toml", *(path for pattern in include for path in REPO.glob(pattern))]:
            target = app / source.relative_to(REPO)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
    return app


def wait_for_port(port: int, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


class Federation:
    """A SuperLink (deployment or simulation) and, for deployment, SuperNodes."""

    def __init__(self, root: Path, simulation: bool = False, pythonpath: Path | None = None):
        """`pythonpath`: a folder every Flower process can import from (your own model or method)."""
        self.root, self.simulation = root, simulation
        self.home = root / "flwr-home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.env = flower_env(self.home)
        if pythonpath is not None:
            self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath), self.env.get("PYTHONPATH", "")]))
        self.port = free_port()
        self.processes: list[subprocess.Popen] = []
        self.nodes: dict[int, subprocess.Popen] = {}
        (self.home / "config.toml").write_text(
            f'[superlink]\ndefault = "test"\n\n[superlink.test]\naddress = "127.0.0.1:{self.port}"\ninsecure = true\n')

    def _start(self, args: list[str], log: str) -> subprocess.Popen:
        out = open(self.root / log, "w")
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=self.root, start_new_session=True)
        self.processes.append(proc)
        return proc

    def start_superlink(self) -> None:
        args = [str(BIN / "flower-superlink"), "--insecure", "--port", str(self.port), "--database", str(self.root / "state.db")]
        self._start(args + (["--simulation"] if self.simulation else []), "superlink.log")
        wait_for_port(self.port)

    def start_tls_superlink(self, readme_command: list[str]) -> None:
        """The README's TLS + SuperNode-authentication SuperLink command, on this federation's port (run
        in `root`, where the README's certificate commands wrote ca.crt, server.pem, server.key); `flwr`
        then connects with the CA certificate instead of `insecure`."""
        args = [str(BIN / readme_command[0]), *readme_command[1:]]
        args[args.index("--port") + 1] = str(self.port)
        if "--host" in args:
            args[args.index("--host") + 1] = "127.0.0.1"  # loopback only in tests
        self._start(args, "superlink.log")
        wait_for_port(self.port)
        (self.home / "config.toml").write_text(
            f'[superlink]\ndefault = "test"\n\n[superlink.test]\naddress = "127.0.0.1:{self.port}"\n'
            f'root-certificates = "{self.root / "ca.crt"}"\n')
        self.node_auth: dict[int, list[str]] = {}

    def register_node_key(self, partition_id: int, readme_node_args: list[str]) -> None:
        """`flwr supernode register <key>.pub` (as the README does) and remember the README's TLS and
        key flags for that node; `readme_node_args`: its flower-supernode flags with node0 -> this node."""
        name = f"node{partition_id}"
        subprocess.run(["ssh-keygen", "-t", "ecdsa", "-b", "384", "-N", "", "-q", "-f", name], cwd=self.root, check=True)
        proc = subprocess.run([str(BIN / "flwr"), "supernode", "register", f"{name}.pub", "test"], capture_output=True,
                              text=True, env=self.env, cwd=self.root, timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"flwr supernode register failed: {proc.stdout[-500:]} {proc.stderr[-500:]}")
        self.node_auth[partition_id] = [a.replace("node0", name) for a in readme_node_args]

    def start_node(self, partition_id: int, num_partitions: int | None = None, data_file: str | None = None,
                   state_dir: str | None = None) -> None:
        """A SuperNode holding a benchmark partition, or (with `data_file`) its own data file."""
        node_config = f"partition-id={partition_id} " + (f"data-file='{data_file}'" if data_file else f"num-partitions={num_partitions}")
        if state_dir:
            node_config += f" state-dir='{state_dir}'"
        security = getattr(self, "node_auth", {}).get(partition_id, ["--insecure"])
        args = [str(BIN / "flower-supernode"), *security, "--superlink", f"127.0.0.1:{self.port}", "--port", str(free_port()),
                "--node-config", node_config]
        self.nodes[partition_id] = self._start(args, f"node{partition_id}.log")

    def kill_node(self, partition_id: int, grace: float = 10) -> None:
        """SIGTERM the node (and its children), SIGKILL after `grace` seconds. A node that exits in time
        tells the SuperLink it is leaving (it is unlisted at once); a killed one stays listed until its
        heartbeats lapse (up to a minute in flwr 1.41)."""
        _kill(self.nodes[partition_id], grace)

    def run(self, run_config: str, timeout: float = 400, federation_config: str | None = None,
            stream: bool = True) -> subprocess.CompletedProcess:
        """`flwr run` of this checkout's app (`app_folder`); with `stream`, returns when the run ends, else once
        it is submitted."""
        args = [str(BIN / "flwr"), "run", str(app_folder(self.root)), "test", "--run-config", run_config] + (["--stream"] if stream else [])
        if federation_config:
            args += ["--federation-config", federation_config]
        return subprocess.run(args, capture_output=True, text=True, env=self.env, timeout=timeout, cwd=self.root)

    def stop_run(self, run_id: int) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "flwr"), "stop", str(run_id), "test"], capture_output=True, text=True,
                              env=self.env, timeout=60, cwd=self.root)

    def signal_serverapps(self, sig: int) -> int:
        """Send `sig` to every ServerApp process of this federation (found by its FLWR_HOME); how many."""
        home = f"FLWR_HOME={self.home}".encode()
        found = 0
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes()
                environ = (proc / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"flwr-serverapp" in cmdline and home in environ:
                os.kill(int(proc.name), sig)
                found += 1
        return found

    def kill_serverapps(self) -> int:
        """SIGKILL every ServerApp process of this federation; how many."""
        return self.signal_serverapps(signal.SIGKILL)

    def node_id(self, partition_id: int) -> int:
        """The Flower node id a SuperNode logged when it connected (its latest start)."""
        found = re.findall(r"SuperNode ID: (\d+)", (self.root / f"node{partition_id}.log").read_text())
        if not found:
            raise RuntimeError(f"node {partition_id} has not connected")
        return int(found[-1])

    def online_node_ids(self) -> set[int]:
        """The node ids the SuperLink lists as online now (`flwr supernode ls --format json`)."""
        proc = subprocess.run([str(BIN / "flwr"), "supernode", "ls", "test", "--format", "json"], capture_output=True,
                              text=True, env=self.env, cwd=self.root, timeout=60)
        listing = json.loads(proc.stdout)
        return {int(n["node-id"]) for n in listing["nodes"] if n["status"] == "online"}

    def stop(self) -> None:
        for proc in self.processes:
            _kill(proc)


def _kill(proc: subprocess.Popen, grace: float = 10) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=grace)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
