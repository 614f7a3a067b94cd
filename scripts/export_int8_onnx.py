#!/usr/bin/env python3
"""ONNX copies of a fine-tuned BERT classifier for `npm run bench:quantize`.

  .venv/bin/python scripts/export_int8_onnx.py MODEL_DIR OUT_DIR

MODEL_DIR: a BertForSequenceClassification checkpoint as elmo saves it (config.json +
model.safetensors). OUT_DIR gets
  model.onnx        inputs input_ids, attention_mask, token_type_ids (int64, dynamic batch and
                    sequence axes); output logits. Traced from the module of
                    export_bench_models.py (the transformers 4 attention pattern) and passed
                    through onnxruntime's BERT optimizer, so Attention, SkipLayerNormalization and
                    BiasGelu are fused as in the ONNX BERT models users deploy;
  model.int8.onnx   onnxruntime.quantization.quantize_dynamic of model.onnx: int8 weights
                    (QInt8), uint8 activations quantized at run time (DynamicQuantizeLinear +
                    MatMulInteger, or the fused QAttention / DynamicQuantizeMatMul), per-channel
                    weight scales: onnxruntime's recommended dynamic quantization of a
                    transformer for the CPU.
Prints the largest logit difference of each file against PyTorch on a few sentences.
"""
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    model_dir, out_dir = sys.argv[1], sys.argv[2]
    import numpy as np
    import onnxruntime as ort
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.optimizer import optimize_model
    from transformers import BertForSequenceClassification

    from export_bench_models import export_module

    torch.manual_seed(0)
    model = BertForSequenceClassification.from_pretrained(model_dir, attn_implementation="eager").eval()
    cfg = model.config

    class Classifier(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.encoder = export_module(m.bert)
            self.classifier = m.classifier

        def forward(self, input_ids, attention_mask, token_type_ids):
            _, pooled = self.encoder(input_ids, attention_mask, token_type_ids)
            return self.classifier(pooled)

    module = Classifier(model).eval()
    ids = torch.randint(5, cfg.vocab_size, (2, 16), dtype=torch.int64)
    mask = torch.ones(2, 16, dtype=torch.int64)
    mask[1, 10:] = 0
    types = torch.zeros(2, 16, dtype=torch.int64)
    os.makedirs(out_dir, exist_ok=True)
    fp32_path = os.path.join(out_dir, "model.onnx")
    int8_path = os.path.join(out_dir, "model.int8.onnx")
    with tempfile.TemporaryDirectory() as tmp:
        raw = os.path.join(tmp, "raw.onnx")
        torch.onnx.export(
            module,
            (ids, mask, types),
            raw,
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["logits"],
            dynamic_axes={n: {0: "batch", 1: "seq"} for n in ["input_ids", "attention_mask", "token_type_ids"]}
            | {"logits": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
        opt = optimize_model(
            raw,
            model_type="bert",
            num_heads=cfg.num_attention_heads,
            hidden_size=cfg.hidden_size,
            opt_level=1,
            use_gpu=False,
        )
        counts = {}
        for node in opt.model.graph.node:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
        print(f"fused graph: {counts}", file=sys.stderr)
        opt.save_model_to_file(fp32_path)
    import onnx

    # The fused contrib ops carry no shape inference for the quantizer: their outputs are f32.
    quantize_dynamic(
        fp32_path,
        int8_path,
        weight_type=QuantType.QInt8,
        per_channel=True,
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )

    with torch.no_grad():
        want = module(ids, mask, types).numpy()
    feeds = {"input_ids": ids.numpy(), "attention_mask": mask.numpy(), "token_type_ids": types.numpy()}
    for path in (fp32_path, int8_path):
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        got = sess.run(None, {i.name: feeds[i.name] for i in sess.get_inputs()})[0]
        print(f"{os.path.basename(path)}: max |logit diff| vs PyTorch {np.abs(got - want).max():.3g}", file=sys.stderr)


if __name__ == "__main__":
    main()
