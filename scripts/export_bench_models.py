#!/usr/bin/env python3
"""Models for `npm run bench:infer`: seeded random BERT encoders in three sizes, saved for every engine.

  .venv/bin/python scripts/export_bench_models.py [--models mini,small,base] [--force]

For each model, bench/models/<name>/ gets
  config.json + model.safetensors   transformers BertModel (with pooler), save_pretrained: the
                                    weights elmo loads and PyTorch runs;
  tokenizer.json                    BertTokenizerFast over the bert-base-uncased vocabulary
                                    (/work/shared/data/bert_vocab), so the directory is a complete
                                    model as elmo's Bert.load expects one;
  model.onnx                        the same model exported with dynamic batch/sequence axes
                                    (inputs input_ids, attention_mask, token_type_ids; outputs
                                    last_hidden_state, pooler_output; opset 17), then passed through
                                    onnxruntime's BERT graph optimizer (fused Attention,
                                    SkipLayerNormalization, BiasGelu, EmbedLayerNormalization), as
                                    the ONNX BERT models users download are prepared.
Existing files are kept (the script is idempotent) unless --force.

Weights: transformers' own initialization under torch.manual_seed, then biases ~ N(0, 0.02) and
LayerNorm gains ~ 1 + N(0, 0.1), so no parameter is trivially zero or one and a numerical
comparison between engines exercises every one of them.
"""
import argparse
import json
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "bench", "models")

# name: (layers, hidden, heads); intermediate = 4 * hidden, vocab 30522, 512 positions.
VOCAB = os.environ.get("ELMO_BENCH_VOCAB", "/work/shared/data/bert_vocab/vocab.txt")

MODELS = {"mini": (4, 256, 4), "small": (4, 512, 8), "base": (12, 768, 12)}
SEED = {"mini": 11, "small": 12, "base": 13}


def build(name):
    import torch
    from transformers import BertConfig, BertModel

    layers, hidden, heads = MODELS[name]
    cfg = BertConfig(
        vocab_size=30522,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        max_position_embeddings=512,
        type_vocab_size=2,
        hidden_act="gelu",
        attn_implementation="eager",
    )
    torch.manual_seed(SEED[name])
    model = BertModel(cfg, add_pooling_layer=True)
    g = torch.Generator().manual_seed(SEED[name] + 1000)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "LayerNorm.weight" in pname:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            elif pname.endswith(".bias"):
                p.copy_(0.02 * torch.randn(p.shape, generator=g))
    model.eval()
    return model


def export_module(model):
    """forward(input_ids, attention_mask, token_type_ids) -> (last_hidden_state, pooler_output).

    The same computation as BertModel.forward, written the way BERT was written when
    onnxruntime's fusion patterns were made (transformers 4): an additive (1 - mask) * -10000 key
    mask, Q/K/V as Reshape + Transpose, scores / sqrt(head_dim). The attention helpers of
    transformers 5 trace into a graph the fusion does not recognize.
    """
    import math

    import torch

    class Export(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask, token_type_ids):
            ext = (1.0 - attention_mask[:, None, None, :].to(torch.float32)) * -10000.0
            x = self.m.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
            for layer in self.m.encoder.layer:
                sa = layer.attention.self
                nh, hd = sa.num_attention_heads, sa.attention_head_size
                heads = x.size()[:-1] + (nh, hd)
                q = sa.query(x).view(heads).permute(0, 2, 1, 3)
                k = sa.key(x).view(heads).permute(0, 2, 1, 3)
                v = sa.value(x).view(heads).permute(0, 2, 1, 3)
                scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(hd) + ext
                ctx = torch.matmul(torch.softmax(scores, dim=-1), v).permute(0, 2, 1, 3).contiguous()
                ctx = ctx.view(ctx.size()[:-2] + (nh * hd,))
                a = layer.attention.output.LayerNorm(layer.attention.output.dense(ctx) + x)
                x = layer.output.LayerNorm(layer.output.dense(layer.intermediate(a)) + a)
            return x, self.m.pooler(x)

    return Export(model).eval()


def export_onnx(model, name, path):
    import numpy as np
    import onnx
    import onnxruntime as ort
    import torch
    from onnxruntime.transformers.optimizer import optimize_model

    layers, hidden, heads = MODELS[name]
    ids = torch.randint(1000, 29000, (2, 16), dtype=torch.int64)
    mask = torch.ones(2, 16, dtype=torch.int64)
    mask[1, 10:] = 0
    types = torch.zeros(2, 16, dtype=torch.int64)
    with tempfile.TemporaryDirectory() as tmp:
        raw = os.path.join(tmp, "raw.onnx")
        torch.onnx.export(
            export_module(model),
            (ids, mask, types),
            raw,
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["last_hidden_state", "pooler_output"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "seq"},
                "attention_mask": {0: "batch", 1: "seq"},
                "token_type_ids": {0: "batch", 1: "seq"},
                "last_hidden_state": {0: "batch", 1: "seq"},
                "pooler_output": {0: "batch"},
            },
            opset_version=17,
            dynamo=False,
        )
        opt = optimize_model(raw, model_type="bert", num_heads=heads, hidden_size=hidden, opt_level=1, use_gpu=False)
        counts = {}
        for node in opt.model.graph.node:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
        if counts.get("Attention", 0) != layers:
            sys.exit(f"{name}: optimized graph has {counts.get('Attention', 0)} fused Attention nodes, "
                     f"expected {layers}; ops: {counts}")
        tmp_out = path + ".tmp"
        opt.save_model_to_file(tmp_out)
        onnx.checker.check_model(tmp_out)

    # The optimized graph must still compute the model: compare with transformers' own forward
    # on a padded batch.
    sess = ort.InferenceSession(tmp_out, providers=["CPUExecutionProvider"])
    feeds = {"input_ids": ids.numpy(), "attention_mask": mask.numpy(), "token_type_ids": types.numpy()}
    names = [i.name for i in sess.get_inputs()]
    hid, pooled = sess.run(["last_hidden_state", "pooler_output"], {k: v for k, v in feeds.items() if k in names})
    with torch.inference_mode():
        ref = model(input_ids=ids, attention_mask=mask, token_type_ids=types)
        ref_h, ref_p = ref.last_hidden_state, ref.pooler_output
    valid = mask.numpy().astype(bool)
    dh = float(np.abs(hid[valid] - ref_h.numpy()[valid]).max())
    dp = float(np.abs(pooled - ref_p.numpy()).max())
    if dh > 1e-3 or dp > 1e-3:
        sys.exit(f"{name}: optimized ONNX differs from PyTorch: hidden {dh:.2e}, pooled {dp:.2e}")
    os.replace(tmp_out, path)
    fused = {k: v for k, v in counts.items() if k in ("Attention", "SkipLayerNormalization", "BiasGelu",
                                                       "FastGelu", "Gelu", "EmbedLayerNormalization")}
    print(f"{name}: model.onnx ({os.path.getsize(path) / 2**20:.0f} MiB), fused ops {json.dumps(fused)}, "
          f"max |onnx - torch| hidden {dh:.1e} pooled {dp:.1e}")


def save_tokenizer(d):
    from transformers import BertTokenizerFast

    if not os.path.exists(VOCAB):
        sys.exit(f"vocabulary {VOCAB} not found (set ELMO_BENCH_VOCAB to a BERT vocab.txt)")
    BertTokenizerFast(vocab_file=VOCAB, do_lower_case=True).save_pretrained(d)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="mini,small,base")
    ap.add_argument("--force", action="store_true", help="rewrite existing files")
    args = ap.parse_args()
    for name in args.models.split(","):
        if name not in MODELS:
            sys.exit(f"unknown model {name!r} (expected one of {', '.join(MODELS)})")
        d = os.path.join(OUT, name)
        st = os.path.join(d, "model.safetensors")
        onx = os.path.join(d, "model.onnx")
        have_hf = os.path.exists(st) and os.path.exists(os.path.join(d, "config.json"))
        have_tok = os.path.exists(os.path.join(d, "tokenizer.json"))
        if have_hf and have_tok and os.path.exists(onx) and not args.force:
            print(f"{name}: {d} up to date")
            continue
        os.makedirs(d, exist_ok=True)
        if not have_tok or args.force:
            save_tokenizer(d)
            print(f"{name}: tokenizer.json")
        if have_hf and os.path.exists(onx) and not args.force:
            continue
        model = build(name)
        if not have_hf or args.force:
            model.save_pretrained(d, safe_serialization=True)
            print(f"{name}: config.json + model.safetensors ({os.path.getsize(st) / 2**20:.0f} MiB)")
        else:
            from transformers import BertModel

            model = BertModel.from_pretrained(d, attn_implementation="eager").eval()
        if not os.path.exists(onx) or args.force:
            export_onnx(model, name, onx)


if __name__ == "__main__":
    main()
