"""Run in the sae-lens environment: train SAELens' standard SAE on stored activations, and time its encoder.

    python saelens_train.py IN.json   # prints JSON

IN.json: {"train": .npy of training rows [N, d_in] float32 in the order to read them, "held_out": .npy [M, d_in],
"d_sae", "hook", "l1_coefficient", "lr", "batch", "epochs", "warmup_fraction", "decay_fraction", "seed", "out": folder}.

SAELens 6.54.12's own trainer does the work (``sae_lens.training.sae_trainer.SAETrainer`` fed by an iterator over
the rows, ``StandardTrainingSAE``: ReLU, L1 on decoder-norm-weighted activations), with the settings monoscope's
recipe also has set to monoscope's values: ``normalize_activations="expected_average_only_in"`` (one constant so
that E‖x‖ = √d_in, folded into the weights at the end), the learning rate, the batch, linear L1 warm-up over the
first ``warmup_fraction`` of steps, linear learning-rate decay to 0 over the last ``decay_fraction``, decoder rows
initialised to norm 0.1 (``decoder_init_norm``), W_enc = W_dec transposed (SAELens' own), the input scale and b_dec
as monoscope sets them (below: SAELens 6 has no option for either), squared error summed over d_in and averaged over
the batch, gradient norm clipped to 1, Adam (0.9, 0.999) (both tools' defaults). What differs stays SAELens': the
random draw of the decoder (kaiming-uniform rows rescaled, monoscope Gaussian rows rescaled), the encoder's input
x − b_dec with b_enc from zero (equal at the start to monoscope's b_enc = −mean·W_enc, free to drift apart), and the
order it reads rows (the given order; monoscope its shuffling buffer over the same rows). The trained SAE is saved
in SAELens' inference format (``save_inference_model``) for monoscope to load and measure with the same function as
its own.
"""

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sae_lens.config import SAETrainerConfig
from sae_lens.saes.standard_sae import StandardTrainingSAE, StandardTrainingSAEConfig
from sae_lens.training.sae_trainer import SAETrainer

request = json.loads(Path(sys.argv[1]).read_text())
torch.manual_seed(request["seed"])
torch.set_num_threads(max(1, torch.get_num_threads()))
rows = torch.from_numpy(np.load(request["train"]))
held_out = torch.from_numpy(np.load(request["held_out"]))
batch, epochs = request["batch"], request["epochs"]
steps = rows.shape[0] * epochs // batch


def batches():
    """Yield training batches in the given order, epoch after epoch (SAETrainer also reads its norm estimate from here)."""
    while True:
        for start in range(0, rows.shape[0] - batch + 1, batch):
            yield rows[start : start + batch]


sae = StandardTrainingSAE(
    StandardTrainingSAEConfig(
        d_in=rows.shape[1],
        d_sae=request["d_sae"],
        l1_coefficient=request["l1_coefficient"],
        l1_warm_up_steps=int(steps * request["warmup_fraction"]),
        normalize_activations="expected_average_only_in",
        decoder_init_norm=0.1,
    )
)
# monoscope's initialisation where SAELens 6 has no setting for it: the input scale (SAELens' own
# expected_average_only_in formula, √d_in / E‖x‖, over every training row as monoscope takes it) is given to the
# trainer rather than estimated from its first batches, and b_dec starts at the scaled data mean (SAELens starts it
# at zero). With apply_b_dec_to_input (SAELens' default) the encoder sees x − b_dec, which is monoscope's
# b_enc = −mean·W_enc at the start.
scale = rows.shape[1] ** 0.5 / rows.norm(dim=-1).mean().item()
with torch.no_grad():
    sae.b_dec.data = rows.mean(dim=0) * scale
trainer = SAETrainer(
    SAETrainerConfig(
        total_training_samples=steps * batch,
        train_batch_size_samples=batch,
        lr=request["lr"],
        lr_end=0.0,
        lr_decay_steps=int(steps * request["decay_fraction"]),
        n_batches_for_norm_estimate=max(1, min(1000, steps)),
        device="cpu",
    ),
    sae,
    batches(),
)
trainer.activation_scaler.scaling_factor = scale  # fit() estimates one only when none is set
started = time.perf_counter()
trained = trainer.fit()
train_seconds = time.perf_counter() - started
trained.cfg.metadata.hook_name = request["hook"]  # SAELens' own field; its runner sets it from the LLM it reads
trained.save_inference_model(request["out"])

with torch.no_grad():
    trained.eval()
    started = time.perf_counter()
    for start in range(0, held_out.shape[0], 4096):
        trained.encode(held_out[start : start + 4096])
    encode_seconds = time.perf_counter() - started
print(
    json.dumps(
        {
            "train_tokens": steps * batch,
            "train_seconds": train_seconds,
            "train_tokens_per_s": steps * batch / train_seconds,
            "encode_tokens": held_out.shape[0],
            "encode_tokens_per_s": held_out.shape[0] / encode_seconds,
            "out": request["out"],
        }
    )
)
