import json

import numpy as np
from ai_edge_litert.interpreter import Interpreter

step = Interpreter(model_path="shakespeare.tflite").get_signature_runner("serving_default")
with open("shakespeare.tflite.json", encoding="utf-8") as f:  # metadata beside the model
    meta = json.load(f)
vocab = meta["vocab"]
state = np.zeros((meta["num_layers"], 2, 1, meta["units"]), np.float32)  # h, c
TEMPERATURE, LENGTH = 0.8, 200  # temperature 0 = greedy
rng, text = np.random.default_rng(1), "ROMEO:"
for ch in text:  # feed the prime
    out = step(ids=np.array([vocab.index(ch)], np.int64), state=state)
    logits, state = out["logits"], out["new_state"]
for _ in range(LENGTH):
    z = logits[0].astype(np.float64)
    p = np.exp((z - z.max()) / max(TEMPERATURE, 1e-6))
    next_id = int(z.argmax()) if TEMPERATURE == 0 else int(rng.choice(len(p), p=p / p.sum()))
    text += vocab[next_id]
    out = step(ids=np.array([next_id], np.int64), state=state)
    logits, state = out["logits"], out["new_state"]
print(text)
