import json

import numpy as np
import onnxruntime as ort

session = ort.InferenceSession("shakespeare.onnx")
meta = session.get_modelmeta().custom_metadata_map
vocab = json.loads(meta["vocab"])
state = np.zeros((int(meta["num_layers"]), 2, 1, int(meta["units"])), np.float32)  # h, c
TEMPERATURE, LENGTH = 0.8, 200  # temperature 0 = greedy
rng, text = np.random.default_rng(1), "ROMEO:"
for ch in text:  # feed the prime
    logits, state = session.run(None, {"ids": np.array([vocab.index(ch)], np.int64), "state": state})
for _ in range(LENGTH):
    z = logits[0].astype(np.float64)
    p = np.exp((z - z.max()) / max(TEMPERATURE, 1e-6))
    next_id = int(z.argmax()) if TEMPERATURE == 0 else int(rng.choice(len(p), p=p / p.sum()))
    text += vocab[next_id]
    logits, state = session.run(None, {"ids": np.array([next_id], np.int64), "state": state})
print(text)
