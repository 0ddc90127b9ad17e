"""Write a tiny random-weight Llama and a small word-level tokenizer for the real-vLLM check.

Runs inside the vLLM venv (transformers, tokenizers, torch). No model can be downloaded here,
and only timing matters, so the weights are random (seeded) and the tokenizer is trained in a
few seconds on made-up words; every token decodes to a non-empty word, so each generated token
reaches the client as text. The folder is rebuilt only when the settings below change (a stamp
file holds them).

    python make_model.py --cache DIR [--name NAME]   # writes DIR/model-NAME, prints its path
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from pathlib import Path

# head_dim 64 (16 does not run on this CPU backend). llama-768x8 is the one the validation
# serves: a decode step takes some 15 ms on one core of these machines (20-30 ms when the
# machine is busy), a prefill about 0.65 ms a token; llama-512x6 steps in about 6 ms, mostly
# vLLM's fixed overhead.
MODELS = {
    "llama-512x6": {"hidden_size": 512, "intermediate_size": 1536, "num_hidden_layers": 6,
                    "num_attention_heads": 8, "num_key_value_heads": 8, "vocab_size": 4096,
                    "max_position_embeddings": 4096, "dtype": "bfloat16"},
    "llama-768x8": {"hidden_size": 768, "intermediate_size": 2048, "num_hidden_layers": 8,
                    "num_attention_heads": 12, "num_key_value_heads": 12, "vocab_size": 4096,
                    "max_position_embeddings": 4096, "dtype": "bfloat16"},
}
SPECIAL = ["<unk>", "<s>", "</s>"]
SEED = 1234


def build_tokenizer(vocab_size: int, out: Path) -> None:
    """A word-level tokenizer over made-up words (a WordLevel model, whitespace split)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    rng = random.Random(SEED)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = sorted({"".join(rng.choice(letters) for _ in range(rng.randint(3, 8)))
                    for _ in range(vocab_size * 2)})[: vocab_size - len(SPECIAL)]

    def corpus():
        for _ in range(200):
            yield " ".join(rng.choice(words) for _ in range(2000)) + " " + " ".join(words)

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")   # joins words with spaces
    trainer = trainers.WordLevelTrainer(vocab_size=vocab_size, min_frequency=1,
                                        special_tokens=SPECIAL)
    tok.train_from_iterator(corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>")
    fast.save_pretrained(str(out))


def build_model(cfg: dict, out: Path) -> None:
    """A LlamaForCausalLM with seeded random weights, saved as safetensors."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(SEED)
    dtype = getattr(torch, cfg["dtype"])
    config = LlamaConfig(
        hidden_size=cfg["hidden_size"], intermediate_size=cfg["intermediate_size"],
        num_hidden_layers=cfg["num_hidden_layers"],
        num_attention_heads=cfg["num_attention_heads"],
        num_key_value_heads=cfg["num_key_value_heads"], vocab_size=cfg["vocab_size"],
        max_position_embeddings=cfg["max_position_embeddings"], bos_token_id=1,
        eos_token_id=2, tie_word_embeddings=True, torch_dtype=cfg["dtype"])
    model = LlamaForCausalLM(config).to(dtype)
    model.save_pretrained(str(out), safe_serialization=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", required=True, type=Path)
    ap.add_argument("--name", default="llama-768x8", choices=sorted(MODELS))
    args = ap.parse_args(argv)
    cfg = MODELS[args.name]
    out = args.cache / f"model-{args.name}"
    stamp = out / ".stamp-trimtab"
    want = json.dumps({"seed": SEED, **cfg}, sort_keys=True)
    if stamp.is_file() and stamp.read_text() == want:
        print(out)
        return 0
    t0 = time.monotonic()
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    build_tokenizer(cfg["vocab_size"], tmp)
    build_model(cfg, tmp)
    stamp_tmp = tmp / ".stamp-trimtab"
    stamp_tmp.write_text(want)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    print(f"make_model: wrote {out} in {time.monotonic() - t0:.1f} s", file=sys.stderr)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
