"""DistriFusion-style patch parallelism for the diffusers UNet, over gangs formed per task.

How it works
------------
A gang of k executors runs one image. `form_gang` builds a torch.distributed process group for this
formation only (rank 0 hosts a TCPStore; the group name, unique per formation, prefixes its keys so a
stale member of an earlier formation cannot join); `gang.close()` tears it down. The model is never
reloaded: `apply_patch_parallel(unet, gang.comm, mode)` swaps the warm UNet's spatial layers for
wrappers and `handle.remove()` puts the same module objects back, ready for a gang of another size.

The latent (B, C, H, W) is cut along H into k contiguous row bands (`plan_bands`). Band heights are
multiples of 2**levels (levels = the UNet's downsamplings), so each band is whole rows at every
resolution and the stride-2 downsamplers see the same rows as in the unsplit UNet; when the units of
rows do not divide evenly, the first bands get one unit more. Each rank runs the UNet on its band:

- zero-padded Conv2d: the `padding` rows just above and below come from the neighbouring bands
  (zeros at the image border, as the unsplit convolution pads);
- GroupNorm: every band's per-group count, mean and variance are all-gathered and combined, so the
  statistics are those of the whole latent;
- self-attention (`attn1`): keys and values of every band are all-gathered, queries stay local;
  cross-attention to the text needs nothing.

`denoise_patch_parallel` runs the whole loop: identical seeded noise on every rank, the band cut out,
the scheduler's steps with the wrapped UNet (classifier-free guidance as a batch of 2), and an
all-gather of the final bands so rank 0 can decode with the VAE (`decode_images`).

What is exact
-------------
`sync` mode exchanges fresh activations at every layer of every step: the result equals the
single-process result up to float rounding (tests: max |difference| <= 1e-4 in fp32 for gangs of 2, 3
and 4, unequal bands included, through one and through three downsamplings). At world size 1 the
wrappers call the original modules and the loop reproduces StableDiffusionPipeline's latents bit for
bit. The schedulers allowed on bands (`BAND_SAFE_SCHEDULERS`) step elementwise and draw no noise.

What displaced mode trades
--------------------------
`displaced` mode exchanges fresh activations for the first `warmup_steps` steps, then uses the other
bands' activations from the previous step (halos, keys/values, GroupNorm statistics) while this
step's all-gather runs in the background and is awaited only one step later. Communication overlaps
computation (the point on slow links or many GPUs) at the cost of a small, bounded error: adjacent
diffusion steps have very similar activations, so the image stays close to the sync one but is no
longer bit-comparable. On the tests' random-weight UNet (10 steps, 4 warm-up) the decoded image is
55 dB PSNR from sync for a gang of 4 and 59 dB for a gang of 2, against 26 dB when the bands do not
communicate at all; fewer warm-up steps or more members lower it. It also keeps a step's worth of
other bands' keys and values per attention layer in memory.

NCCL
----
`backend="nccl"` builds a `ProcessGroupNCCL` the same way. There `wait()` only orders the GPU stream
(the CPU keeps queueing kernels), so a lost member surfaces through NCCL's own timeout and error
handling rather than the blocking wait used on gloo.

Failure
-------
Collectives time out after the gang's `timeout_s`; a member that dies or hangs makes the others raise
`GangMemberLost` (a formation that never completes raises `GangFormationError`), never hang.
"""

from services.executor.parallel.bands import BandPlan, plan_bands
from services.executor.parallel.comm import PatchComm
from services.executor.parallel.denoise import (
    DenoiseRequest,
    PromptEmbeddings,
    decode_images,
    denoise_patch_parallel,
    encode_prompt,
)
from services.executor.parallel.errors import GangError, GangFormationError, GangMemberLost
from services.executor.parallel.gang import Gang, form_gang
from services.executor.parallel.layers import Mode
from services.executor.parallel.patch import PatchParallelHandle, apply_patch_parallel

__all__ = [
    "BandPlan",
    "DenoiseRequest",
    "Gang",
    "GangError",
    "GangFormationError",
    "GangMemberLost",
    "Mode",
    "PatchComm",
    "PatchParallelHandle",
    "PromptEmbeddings",
    "apply_patch_parallel",
    "decode_images",
    "denoise_patch_parallel",
    "encode_prompt",
    "form_gang",
    "plan_bands",
]
