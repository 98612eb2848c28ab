#!/usr/bin/env python3
"""Golden data for the C++ parity tests against HuggingFace transformers' Mamba (MambaForCausalLM).

Run on a machine with torch (2.11) + transformers (5.x) + safetensors, CPU only:

    python3 tools/gen_parity.py [--out tests/data/parity] [--out-f32 tests/data/parity_f32]

What it does (deterministic: fixed seeds, one thread, deterministic algorithms):
  1. Builds a small transformers.MambaConfig moved away from the defaults (vocab 37, hidden 24, state 5, 3 layers,
     conv kernel 3, time_step_rank 4 instead of auto=2, no in/out projection bias, conv bias, tied embeddings).
  2. MambaForCausalLM(config).double(), then sets EVERY parameter to seeded random values away from its init
     (norm weights 1 + 0.2*randn, D ~ randn, A_log = log(1..N) + 0.3*randn, conv bias ~ 0.1*randn, dt bias =
     softplus^-1 of dt in [0.05, 0.5], weight matrices ~ randn/sqrt(fan_in)), so that no "D = 1" / "bias = 0" /
     "norm weight = 1" shortcut in the C++ code can pass by accident.
  3. ids: [B=3, L=11] in [0, vocab) (with 0 and vocab-1 present). Forward with output_hidden_states and labels=ids
     (transformers shifts: positions 0..L-2 predict 1..L-1, mean over B*(L-1)), then loss.backward().
  4. Writes into --out: config.json (model.config.to_json_file), model.safetensors (float64 state dict without the
     tied lm_head.weight), ids.txt (one sequence per line), golden.safetensors (float64: "logits" [B,L,V],
     "last_hidden_state" [B,L,d] (after norm_f), "loss" [], "grad/<name>" for every tensor of model.safetensors; the
     tied embedding's gradient includes the lm_head contribution). Into --out-f32: the same with the weights cast to
     float32 (golden.safetensors is still the float64 one) for the C++ fp32 parity test (rel ~1e-4).

Precision note (why the TrueFloat64 patch below exists): transformers' Mamba is written for fp16/bf16 weights and
casts several intermediates to float32 even when the model is float64: `self.A_log.float()`, `B.float()`,
`hidden_states.float()` in the scan, `hidden_states.to(torch.float32)` in MambaRMSNorm, `residual.to(torch.float32)`
when residual_in_fp32, and `self.lm_head(...).float()` for the logits. Golden data produced that way would carry
float32 rounding (~1e-7 relative) and could not check a float64 implementation. While the golden forward/backward
runs, Tensor.float() / Tensor.to(torch.float32) on a float64 tensor are made no-ops, so transformers' own code runs
entirely in float64. The script then checks that result three ways:
  - against an independent float64 re-implementation of the Mamba-1 LM written here from docs/DESIGN.md (forward AND
    every gradient, to ~1e-10 relative) - this proves no float32 rounding is left and the patch changed nothing else;
  - hidden_states[-1] == norm_f(hidden_states[-2]) (transformers' last hidden state is after the final norm),
    logits == last_hidden_state @ embedding^T, loss == cross-entropy of the shifted logits;
  - the unpatched transformers run (with its float32 casts) agrees to float32 accuracy (printed, loose assert).
"""

import argparse
import hashlib
import json
import math
import os
import sys

import torch
import torch.nn.functional as F

B, L = 3, 11
SEED = 0
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_config(transformers):
    return transformers.MambaConfig(
        vocab_size=37,
        hidden_size=24,
        state_size=5,
        num_hidden_layers=3,
        expand=2,
        conv_kernel=3,
        time_step_rank=4,  # "auto" would give ceil(24/16) = 2
        use_conv_bias=True,
        use_bias=False,  # transformers' default is True; the published models have no projection bias
        layer_norm_epsilon=1e-5,
        residual_in_fp32=True,
        tie_word_embeddings=True,
        initializer_range=0.02,
        time_step_min=0.002,
        time_step_max=0.08,
        hidden_act="silu",
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        use_cache=False,
    )


class TrueFloat64:
    """Inside this context, float32 casts of float64 tensors are no-ops (see the module docstring)."""

    def __init__(self):
        self.neutralised = 0

    def __enter__(self):
        self._float, self._to = torch.Tensor.float, torch.Tensor.to
        orig_float, orig_to, outer = self._float, self._to, self

        def _float(t, *args, **kwargs):
            if t.dtype == torch.float64:
                outer.neutralised += 1
                return t
            return orig_float(t, *args, **kwargs)

        def _to(t, *args, **kwargs):
            if t.dtype == torch.float64:
                if any(a is torch.float32 for a in args) or kwargs.get("dtype") is torch.float32:
                    outer.neutralised += 1
                    args = tuple(torch.float64 if a is torch.float32 else a for a in args)
                    if kwargs.get("dtype") is torch.float32:
                        kwargs = dict(kwargs, dtype=torch.float64)
            return orig_to(t, *args, **kwargs)

        torch.Tensor.float, torch.Tensor.to = _float, _to
        return self

    def __exit__(self, *exc):
        torch.Tensor.float, torch.Tensor.to = self._float, self._to
        return False


@torch.no_grad()
def set_parameters(model, cfg, gen):
    """Overwrite every parameter with seeded values away from its init (sorted names: order-independent)."""
    before = {n: p.detach().clone() for n, p in model.named_parameters()}

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    def rand(*shape):
        return torch.rand(*shape, generator=gen, dtype=torch.float64)

    for name, p in sorted(model.named_parameters()):
        shape = p.shape
        if name.endswith("norm.weight") or name.endswith("norm_f.weight"):
            v = 1.0 + 0.2 * randn(shape)
        elif name.endswith("mixer.D"):
            v = randn(shape)
        elif name.endswith("mixer.A_log"):
            n = shape[1]
            v = torch.log(torch.arange(1, n + 1, dtype=torch.float64)).expand(shape) + 0.3 * randn(shape)
        elif name.endswith("conv1d.bias"):
            v = 0.1 * randn(shape)
        elif name.endswith("dt_proj.bias"):
            # dt in [0.05, 0.5] log-uniform, stored as softplus^-1(dt) = dt + log(-expm1(-dt)) (docs/DESIGN.md "Initialisation")
            dt = torch.exp(rand(shape) * (math.log(0.5) - math.log(0.05)) + math.log(0.05))
            v = dt + torch.log(-torch.expm1(-dt))
        elif name.endswith("embeddings.weight"):
            v = 0.5 * randn(shape)
        elif name.endswith(".weight") and p.dim() >= 2:  # in_proj, conv1d, x_proj, dt_proj, out_proj
            fan_in = shape[1] * (shape[2] if p.dim() == 3 else 1)
            v = randn(shape) / math.sqrt(fan_in)
        elif name.endswith(".bias"):
            v = 0.1 * randn(shape)
        else:
            raise SystemExit(f"gen_parity: no rule for parameter {name} {tuple(shape)}")
        p.copy_(v)
    for n, p in model.named_parameters():
        assert not torch.equal(p, before[n]), f"parameter {n} still equals its init"


def reference_forward(params, cfg, ids):
    """Independent float64 Mamba-1 LM (docs/DESIGN.md "The Mamba-1 block"); returns logits, last hidden, loss."""
    V, N, K = cfg.vocab_size, cfg.state_size, cfg.conv_kernel
    di, r, eps = cfg.intermediate_size, int(cfg.time_step_rank), cfg.layer_norm_epsilon
    nb, nl = ids.shape

    def rms(x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w

    def linear(x, prefix):
        y = x @ params[prefix + ".weight"].T
        return y + params[prefix + ".bias"] if prefix + ".bias" in params else y

    emb = params["backbone.embeddings.weight"]
    h = emb[ids]  # [B, L, d]
    for i in range(cfg.num_hidden_layers):
        p = f"backbone.layers.{i}."
        xz = linear(rms(h, params[p + "norm.weight"]), p + "mixer.in_proj")
        x, z = xz[..., :di], xz[..., di:]
        w = params[p + "mixer.conv1d.weight"][:, 0, :]  # [di, K]
        xp = F.pad(x, (0, 0, K - 1, 0))  # K-1 zeros before t = 0 (causal)
        conv = sum(xp[:, k : k + nl, :] * w[:, k] for k in range(K))
        if p + "mixer.conv1d.bias" in params:
            conv = conv + params[p + "mixer.conv1d.bias"]
        u = F.silu(conv)  # [B, L, di]
        dt, Bm, Cm = torch.split(u @ params[p + "mixer.x_proj.weight"].T, [r, N, N], dim=-1)
        delta = F.softplus(linear(dt, p + "mixer.dt_proj"))  # [B, L, di]
        A = -torch.exp(params[p + "mixer.A_log"])  # [di, N]
        s = torch.zeros(nb, di, N, dtype=h.dtype)
        ys = []
        for t in range(nl):
            dlt = delta[:, t, :, None]
            s = torch.exp(dlt * A) * s + dlt * u[:, t, :, None] * Bm[:, t, None, :]
            ys.append((s * Cm[:, t, None, :]).sum(-1))
        y = torch.stack(ys, dim=1) + u * params[p + "mixer.D"]
        h = h + linear(y * F.silu(z), p + "mixer.out_proj")
    last = rms(h, params["backbone.norm_f.weight"])
    logits = last @ emb.T
    loss = F.cross_entropy(logits[:, :-1, :].reshape(-1, V), ids[:, 1:].reshape(-1))
    return logits, last, loss


def max_rel(a, b):
    """max |a-b| / (max |b| + tiny): one number per tensor pair."""
    return ((a - b).abs().max() / (b.abs().max() + 1e-300)).item()


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


def write_dir(out, config_json, weights, ids, golden, save_file):
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.json"), "w") as f:
        f.write(config_json)
    save_file(weights, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(out, "ids.txt"), "w") as f:
        for row in ids.tolist():
            f.write(" ".join(str(v) for v in row) + "\n")
    save_file(golden, os.path.join(out, "golden.safetensors"), metadata={"generator": "tools/gen_parity.py"})


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(REPO, "tests", "data", "parity"))
    ap.add_argument("--out-f32", default=os.path.join(REPO, "tests", "data", "parity_f32"),
                  help="optional float32 copy of the weights (the C++ tests load the float64 files into f32)")
    args = ap.parse_args()

    import transformers
    from safetensors.torch import save_file

    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    cfg = make_config(transformers)
    model = transformers.MambaForCausalLM(cfg).double()
    model.eval()  # no dropout exists; eval only keeps transformers from touching training-only paths
    emb = model.backbone.embeddings.weight
    if model.lm_head.weight is not emb:
        model.tie_weights()
    assert model.lm_head.weight is emb, "lm_head.weight is not tied to backbone.embeddings.weight"

    gen = torch.Generator().manual_seed(SEED)
    set_parameters(model, cfg, gen)
    ids = torch.randint(0, cfg.vocab_size, (B, L), generator=gen, dtype=torch.long)
    ids[0, 0] = 0
    ids[1, -1] = cfg.vocab_size - 1

    # ---- golden run: transformers' code, entirely in float64 ----
    model.zero_grad(set_to_none=True)
    with TrueFloat64() as patch:
        out = model(input_ids=ids, labels=ids, output_hidden_states=True, use_cache=False, return_dict=True)
        out.loss.backward()
        hs = out.hidden_states
        assert len(hs) == cfg.num_hidden_layers + 1, f"expected n_layer + 1 hidden states, got {len(hs)}"
        with torch.no_grad():
            renormed = model.backbone.norm_f(hs[-2])
    assert patch.neutralised > 0, "no float32 cast was intercepted: transformers' code changed, re-check"
    logits, last, loss = out.logits.detach(), hs[-1].detach(), out.loss.detach()
    for name, t in (("logits", logits), ("last_hidden_state", last), ("loss", loss)):
        assert t.dtype == torch.float64, f"{name} is {t.dtype}, expected float64"
        assert torch.isfinite(t).all(), f"{name} is not finite"
    # transformers' hidden_states[-1] (and last_hidden_state) is AFTER norm_f:
    assert torch.allclose(last, renormed, rtol=1e-14, atol=1e-14), "hidden_states[-1] is not norm_f(hidden_states[-2])"
    assert torch.allclose(logits, last @ emb.detach().T, rtol=1e-12, atol=1e-13), "logits != last_hidden @ emb^T"
    ce = F.cross_entropy(logits[:, :-1].reshape(-1, cfg.vocab_size), ids[:, 1:].reshape(-1))
    assert torch.allclose(loss, ce, rtol=1e-13, atol=0), "loss is not the mean shifted cross-entropy"

    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    params = dict(model.named_parameters())
    grads = {}
    for k in state:
        assert state[k].dtype == torch.float64, f"{k} is {state[k].dtype}"
        assert k in params and params[k].grad is not None, f"no gradient for {k}"
        grads[k] = params[k].grad.detach().clone().contiguous()

    # ---- check 1: an independent float64 implementation agrees (forward and every gradient) ----
    ref_params = {k: v.clone().requires_grad_(True) for k, v in state.items()}
    r_logits, r_last, r_loss = reference_forward(ref_params, cfg, ids)
    r_loss.backward()
    worst = {"logits": max_rel(logits, r_logits.detach()), "last_hidden_state": max_rel(last, r_last.detach()),
             "loss": max_rel(loss, r_loss.detach())}
    for k in state:
        worst["grad/" + k] = max_rel(grads[k], ref_params[k].grad)
    bad = {k: v for k, v in worst.items() if not v < 1e-10}
    assert not bad, f"transformers (float64) and the reference disagree: {bad}"

    # ---- check 2: transformers as-is (with its internal float32 casts) agrees to float32 accuracy ----
    with torch.no_grad():
        plain = model(input_ids=ids, labels=ids, use_cache=False, return_dict=True)
    f32_logits_rel = max_rel(plain.logits.double(), logits)
    assert f32_logits_rel < 1e-4, f"unpatched transformers differs by {f32_logits_rel} (expected float32 rounding)"

    # ---- write ----
    golden = {"logits": logits.contiguous(), "last_hidden_state": last.contiguous(), "loss": loss.reshape(())}
    golden.update({"grad/" + k: g for k, g in grads.items()})
    os.makedirs(args.out, exist_ok=True)
    config_path = os.path.join(args.out, "config.json")
    model.config.architectures = ["MambaForCausalLM"]  # what save_pretrained would record
    model.config.to_json_file(config_path, use_diff=False)
    with open(config_path) as f:
        config_json = f.read()
    written = json.loads(config_json)
    for key, want in (("model_type", "mamba"), ("vocab_size", 37), ("hidden_size", 24), ("state_size", 5),
                      ("num_hidden_layers", 3), ("conv_kernel", 3), ("time_step_rank", 4), ("use_bias", False),
                      ("intermediate_size", 48)):
        assert written.get(key) == want, f"config.json: {key} = {written.get(key)!r}, expected {want!r}"
    write_dir(args.out, config_json, state, ids, golden, save_file)
    write_dir(args.out_f32, config_json, {k: v.float().contiguous() for k, v in state.items()}, ids, golden, save_file)

    # ---- summary ----
    print(f"gen_parity: torch {torch.__version__}, transformers {transformers.__version__}")
    print(f"  config: vocab {cfg.vocab_size}, d {cfg.hidden_size}, N {cfg.state_size}, layers {cfg.num_hidden_layers},"
          f" d_inner {cfg.intermediate_size}, dt_rank {cfg.time_step_rank}, K {cfg.conv_kernel},"
          f" tied {cfg.tie_word_embeddings}, params {sum(v.numel() for v in state.values())}")
    print(f"  ids [{B}, {L}]: first row {ids[0].tolist()}")
    print(f"  loss {loss.item():.17g}; logits |max| {logits.abs().max().item():.4g};"
          f" last_hidden |max| {last.abs().max().item():.4g}")
    print(f"  float32 casts neutralised: {patch.neutralised}; unpatched transformers logits rel diff"
          f" {f32_logits_rel:.3g}")
    print(f"  independent float64 reference: worst rel diff {max(worst.values()):.3g} over {len(worst)} tensors")
    for k in sorted(grads):
        print(f"    grad/{k:45s} {tuple(grads[k].shape)!s:14s} |g|_max {grads[k].abs().max().item():.4g}")
    for d in (args.out, args.out_f32):
        for f in ("config.json", "model.safetensors", "ids.txt", "golden.safetensors"):
            p = os.path.join(d, f)
            print(f"  wrote {os.path.relpath(p, REPO)} ({os.path.getsize(p)} bytes, sha256 {sha256(p)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
