"""The networks a config's ``model`` section describes (pix2pixHD's ``define_G`` / ``define_D``).

The modules themselves know nothing of configs; this is the one place that reads
``config.model`` to build them, for training, checkpoint restores and inference alike.
"""

from __future__ import annotations

import jax.numpy as jnp

from edn_jax.conditioning import background
from edn_jax.errors import EdnError
from edn_jax.models.discriminator import MultiscaleDiscriminator
from edn_jax.models.face import FaceDiscriminator, FaceResidualGenerator
from edn_jax.models.generator import GlobalGenerator
from edn_jax.models.local_enhancer import LocalEnhancer

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
EXEMPLAR_CHANNELS = 6  # model.exemplar: the nearest training frame and its stick figure (edn_jax.conditioning.exemplar)
# model.exemplar: "none"; "input" (G sees it); "copy" (G sees it and draws a copy mask: where the mask is
# on, the frame takes the exemplar's colours instead of G's).
EXEMPLAR_MODES = ("none", "input", "copy")
# model.exemplar_warp: "none" (the exemplar as it is) or "limbs" (moved into the asked pose, edn_jax.data.limb_warp).
EXEMPLAR_WARPS = ("none", "limbs")


def uses_exemplar(mode: str) -> bool:
    return mode in ("input", "copy")


def compute_dtype(config) -> jnp.dtype:
    """``model.dtype`` as a JAX dtype (activations; params stay float32)."""
    if config.model.dtype not in DTYPES:
        raise EdnError(f"model.dtype={config.model.dtype!r} is not supported", "use float32 or bfloat16")
    return DTYPES[config.model.dtype]


def generator_channels(config) -> int:
    """Input channels of the main generator: the stick figure, its previous output (temporal
    smoothing), optionally the previous stick figure, the background plate (``model.background``) and
    the exemplar frame and its stick figure (``model.exemplar``)."""
    m = config.model
    return (((9 if m.use_prev_label else 6) if m.temporal else 3) + (3 if background.uses_plate(m.background) else 0)
            + (EXEMPLAR_CHANNELS if uses_exemplar(m.exemplar) else 0))


def build_generator(config, kind: str = "global"):
    """The main generator: a GlobalGenerator, or (kind="local") a LocalEnhancer around one."""
    dtype, m = compute_dtype(config), config.model
    # + a mask channel for model.background="composite", + a copy mask for model.exemplar="copy"
    output_nc = background.output_channels(m.background) + (1 if m.exemplar == "copy" else 0)
    if kind == "local":
        return LocalEnhancer(output_nc=output_nc, ngf=m.local_ngf, global_ngf=m.ngf,
                             n_downsampling_global=m.n_downsampling, n_blocks_global=m.n_blocks,
                             n_blocks_local=m.n_blocks_local, dtype=dtype)
    return GlobalGenerator(output_nc=output_nc, ngf=m.ngf, n_downsampling=m.n_downsampling, n_blocks=m.n_blocks, dtype=dtype)


def build_discriminator(config, num_d: int = 0) -> MultiscaleDiscriminator:
    """The (temporal) multiscale PatchGAN with ``num_d`` scales (0: ``model.num_d``, the global
    stage's; a stage's own count is ``stages.Stage.num_d``)."""
    m = config.model
    return MultiscaleDiscriminator(num_d=num_d or m.num_d, ndf=m.ndf, n_layers=m.n_layers_d,
                                   dtype=compute_dtype(config))


def build_models(config, kind: str = "global", num_d: int = 0):
    """(main generator, temporal multiscale discriminator) of a stage: ``kind`` is its generator."""
    return build_generator(config, kind), build_discriminator(config, num_d)


def build_face_models(config):
    """(face residual generator, 70x70 face PatchGAN) of the face stage."""
    m, dtype = config.model, compute_dtype(config)
    return (FaceResidualGenerator(ngf=m.face_ngf, n_downsampling=m.face_n_downsampling, n_blocks=m.face_n_blocks,
                                  dtype=dtype),
            FaceDiscriminator(ndf=m.face_ndf, n_layers=m.face_n_layers_d, norm=m.face_d_norm, dtype=dtype))
