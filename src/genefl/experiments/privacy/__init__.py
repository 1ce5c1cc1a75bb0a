"""Gradient inversion against exactly what a method's clients send: the attack harness.

An honest-but-curious server holds a client's upload and the model it broadcast, and tries to
recover the client's images. The upload is not re-implemented here: `exact_payloads` runs the real
simulator for one round on a scenario whose clients each hold the attacked batch, records every
reply (through the round loop's `on_upload` event) as the bytes the wire format sends
(`genefl.protocol.messages.encode`, what the ledger counts and Flower ships) and as the server
decoded it. So a method that uploads a learnGene of two
layers is attacked on those two layers only, and FedLP on the layers it happened to send.

Also `signature_leak`: what GENE-FL's and PACFL's one-shot SVD signature gives away; and
`membership_auc`: a loss-threshold membership inference on what a newcomer is handed.

Threat cases (`local_steps`): `one_step`, the attack's best case, one local step of plain SGD on a
batch of B images; the update is then exactly lr x the gradient of the uploaded layers (GENE-FL's,
FedProx's and SCAFFOLD's correction terms are zero at the first step). `local_epochs`, the realistic
case: the configured local epochs over the B images in about four mini-batches each (so several
steps once B >= 4; with B = 1 and one local epoch it is the best case again); the update is read as
lr x steps x one averaged gradient, as Inverting Gradients attacks multi-step updates.
SCAFFOLD's Δc carries the same gradient and is not attacked separately.

Attacks (written here: `breaching` 0.1.2, that group's framework on PyPI, requires torchvision and
imports it when loaded, `breaching.cases.models.model_preparation`; PyPI's torchvision does not
import beside the torch 2.13 CPU build genefl installs, so breaching cannot run beside genefl):
- DLG (Zhu et al., NeurIPS 2019): dummy images and soft labels optimised with L-BFGS so that their
  gradient matches the observed one in squared L2 distance;
- iDLG (Zhao et al., 2020): the same with the labels read first from the head's bias gradient
  (softmax − one-hot is negative only at a present label; for B > 1 the B most negative entries);
- cosine (Geiping et al., NeurIPS 2020, "Inverting Gradients"): 1 − cosine similarity of the
  gradients plus total variation, optimised with Adam and a decaying step, labels as in iDLG.
Each attack runs `restarts` times from seeded random images and keeps the best gradient match (the
first restart starts from the analytic recovery when the upload holds a fully connected first
layer's gradients: `analytic_start`);
iterations are bounded (`iterations`). Metrics per image (after matching reconstructions to
originals by PSNR with the Hungarian method): PSNR and SSIM from scikit-image, on images scaled to
the original's range, and label recovery accuracy.

The package: `capture` (one real round's uploads, as sent and as decoded), `attacks` (the
inversions and the signature's leak), `metrics` (PSNR/SSIM matching, membership AUC), `membership`
(the newcomer's start attacked), `report` (`genefl attack`'s files).
"""

from .attacks import ATTACKS, attack_payload, observed_gradient, run_attack, signature_leak
from .capture import CASES, Payload, UploadCapture, attack_images, exact_payloads, local_steps
from .membership import membership_auc
from .metrics import image_scores, loss_threshold_auc
from .report import attack_methods, save_grid

__all__ = ["ATTACKS", "CASES", "Payload", "UploadCapture", "attack_images", "attack_methods", "attack_payload",
           "exact_payloads", "image_scores", "local_steps", "loss_threshold_auc", "membership_auc",
           "observed_gradient", "run_attack", "save_grid", "signature_leak"]
