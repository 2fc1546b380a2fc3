"""The character-level language-model run's settings (one dataclass): an LSTM with truncation T trained
by BPTT, DNI, DNI+Aux or BP(λ) ([DNI] Sec. 3.1, Penn Treebank in the paper). Torch-free."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ...catalog import CHARLM_METHODS as METHODS
from ...catalog import PRECISIONS, TIERS
from ...config import RunConfig, precision_tag

NON_RESULT_FIELDS = {"device", "threads", "data_root", "download"}


@dataclass
class CharLMConfig(RunConfig):
    """Every setting of a char-LM run. Where [DNI] gives no value, the choice is sgbench's (marked)."""
    corpus: str = "shakespeare-gutenberg"  # ptb | a name in the data root | a path (sgbench.corpus)
    method: str = "dni"                 # bptt | dni | dni_aux | dni_bpl
    T: int = 5                          # truncation: steps per window
    seed: int = 0
    timesteps: int = 100_000            # budget: characters read per stream
    batch_size: int = 32                # parallel streams over the training text (sgbench's choice)
    hidden_size: int = 256              # LSTM units (sgbench's choice)
    embed_dim: int = 32                 # character embedding (sgbench's choice)
    forget_bias: float = 1.0
    lr: float = 1e-3                    # Adam (sgbench's choice)
    sg_lr: float = 1e-5                 # Adam, the SG model (as the RNN family's: sgbench.families.rnn.config)
    clip: float = 1.0                   # gradient-norm clipping (sgbench's choice; 0: off)
    sg_hidden_layers: int = 0           # 0: linear SG in the state, as in [DNI]
    sg_hidden_dim: int = 256
    sg_scale: float = 0.1               # injected SG scale ([DNI] 0.1: recalled second-hand)
    sg_discount: float = 0.9            # γ of the SG's bootstrapped target (sgbench's choice, as [BPλ]'s code)
    sg_loss_weight: float = 1.0
    aux_weight: float = 1.0
    bpl_lambda: float = 0.5
    bpl_horizon: int = 4
    eval_every: int = 10_000            # validation bpc every n time steps (and at the end)
    eval_chars: int = 100_000           # characters of the validation split per evaluation (0: all)
    tier: str = "custom"
    precision: str = "fp32"             # bf16: autocast around each forward (CPU too); tf32: TF32 matmuls (CUDA)
    data_root: str = ""                 # else $SGBENCH_DATA, else ./data
    download: bool = False              # ptb: fetch it where internet exists
    device: str = "auto"
    threads: int = 0

    CHOICES = {"method": METHODS, "tier": TIERS, "precision": PRECISIONS}

    def resolved(self) -> CharLMConfig:
        c = dataclasses.replace(self)
        c.check([
            (c.T >= 1, f"T (truncation length) must be >= 1, got {c.T}"),
            (c.timesteps >= c.T, f"timesteps must be >= T, got {c.timesteps}"),
            (c.batch_size >= 2, f"batch_size must be >= 2, got {c.batch_size}"),
            (min(c.hidden_size, c.embed_dim, c.sg_hidden_dim) >= 1, "hidden_size, embed_dim, sg_hidden_dim must be >= 1"),
            (c.lr > 0 and c.clip >= 0, "lr must be > 0 and clip >= 0 (0: off)"),
            (c.sg_lr > 0, f"sg_lr (the SG model's Adam rate) must be > 0, got {c.sg_lr}"),
            (c.sg_hidden_layers >= 0 and c.sg_scale >= 0 and c.sg_discount >= 0,
             "sg_hidden_layers, sg_scale and sg_discount must be >= 0"),
            (0 <= c.bpl_lambda <= 1 and c.bpl_horizon >= 1, "bpl_lambda must be in [0, 1] and bpl_horizon >= 1"),
            (c.eval_every >= 1 and c.eval_chars >= 0, "eval_every must be >= 1 and eval_chars >= 0 (0: all)"),
            (c.threads >= 0, f"threads must be >= 0 (0: torch's default), got {c.threads}"),
            (bool(c.corpus), "corpus must name a corpus: ptb, shakespeare-gutenberg, or a path"),
        ])
        return c


def run_name(p: dict) -> str:
    """The pipeline's name of a run: shakespeare-gutenberg-T5-dni-seed0."""
    corpus = str(p.get("corpus", CharLMConfig.corpus)).rstrip("/").split("/")[-1]
    return f"{corpus}-T{p['T']}-{p['method']}{precision_tag(p)}-seed{p['seed']}"
