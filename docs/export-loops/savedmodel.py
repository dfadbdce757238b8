import json

import numpy as np
import tensorflow as tf

model = tf.saved_model.load("shakespeare_savedmodel/1")
meta = json.loads(model.metadata_json.numpy())
vocab = meta["vocab"]
state = model.initial_state(tf.constant(1))["state"]  # zeros: [num_layers, 2, 1, units]
TEMPERATURE, LENGTH = 0.8, 200  # temperature 0 = greedy
rng, text = np.random.default_rng(1), "ROMEO:"
for ch in text:  # feed the prime
    out = model.step(tf.constant([vocab.index(ch)], tf.int64), state)
    logits, state = out["logits"].numpy(), out["new_state"]
for _ in range(LENGTH):
    z = logits[0].astype(np.float64)
    p = np.exp((z - z.max()) / max(TEMPERATURE, 1e-6))
    next_id = int(z.argmax()) if TEMPERATURE == 0 else int(rng.choice(len(p), p=p / p.sum()))
    text += vocab[next_id]
    out = model.step(tf.constant([next_id], tf.int64), state)
    logits, state = out["logits"].numpy(), out["new_state"]
print(text)
