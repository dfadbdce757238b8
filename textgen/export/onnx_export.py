"""The step contract as an ONNX graph, written node by node with `onnx.helper` from the arrays.

No TensorFlow graph is traced: an LSTM traced on a GPU turns into a CuDNN op that ONNX cannot
express, while these arrays give the same few MatMul / Gather / Sigmoid / Tanh nodes anywhere.

Graph (opset 17), per layer i with (h, c) = state[i, 0], state[i, 1]:
    z = table[ids] + h @ recurrent_0                (layer 0: embedding, kernel and bias folded)
    z = x @ kernel_i + h @ recurrent_i + bias_i     (layers after the first; x = the layer below's h)
    i, f, g, o = split(z, 4)  (Keras' gate order)
    c' = sigmoid(f) * c + sigmoid(i) * tanh(g);  h' = sigmoid(o) * tanh(c')
    logits = h'_last @ out_kernel + out_bias;  new_state = stack over layers of (h', c')
Inputs: ids int64 [batch], state float32 [num_layers, 2, batch, units].
Outputs: logits float32 [batch, vocab], new_state (the shape of state).
"""

from __future__ import annotations

import json

import numpy as np

from textgen.export.model_arrays import ModelArrays

OPSET = 17


def _onnx():
    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError:
        from textgen.errors import MissingExtraError

        raise MissingExtraError('--format onnx needs the onnx package: pip install "textgen[export]"') from None
    return onnx, helper, numpy_helper


def build(arrays: ModelArrays):
    """The ONNX ModelProto of the step contract, checked by `onnx.checker`."""
    onnx, helper, numpy_helper = _onnx()
    nodes, initializers = [], []

    def const(name, value):
        initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(op, inputs, name, **attributes):
        nodes.append(helper.make_node(op, inputs, [name], name=name, **attributes))
        return name

    units, layers = arrays.units, arrays.num_layers
    const("table_0", arrays.first_layer_table())
    const("gate_sizes", np.array([units] * 4, dtype=np.int64))
    const("zero", np.array(0, dtype=np.int64))
    const("one", np.array(1, dtype=np.int64))
    const("axis_0", np.array([0], dtype=np.int64))
    below = None
    pairs = []
    for i in range(layers):
        const(f"recurrent_{i}", arrays.recurrents[i])
        layer_state = node("Gather", ["state", const(f"layer_{i}", np.array(i, dtype=np.int64))],
                           f"state_{i}", axis=0)
        h = node("Gather", [layer_state, "zero"], f"h_{i}", axis=0)
        c = node("Gather", [layer_state, "one"], f"c_{i}", axis=0)
        from_h = node("MatMul", [h, f"recurrent_{i}"], f"from_h_{i}")
        if i == 0:
            from_x = node("Gather", ["table_0", "ids"], "from_x_0", axis=0)
            z = node("Add", [from_x, from_h], "z_0")
        else:
            const(f"kernel_{i}", arrays.kernels[i])
            const(f"bias_{i}", arrays.biases[i])
            from_x = node("MatMul", [below, f"kernel_{i}"], f"from_x_{i}")
            z = node("Add", [node("Add", [from_x, from_h], f"sum_{i}"), f"bias_{i}"], f"z_{i}")
        gates = [f"gate_{g}_{i}" for g in "ifco"]
        nodes.append(helper.make_node("Split", [z, "gate_sizes"], gates, name=f"split_{i}", axis=1))
        gate_i = node("Sigmoid", [gates[0]], f"input_gate_{i}")
        gate_f = node("Sigmoid", [gates[1]], f"forget_gate_{i}")
        gate_c = node("Tanh", [gates[2]], f"candidate_{i}")
        gate_o = node("Sigmoid", [gates[3]], f"output_gate_{i}")
        new_c = node("Add", [node("Mul", [gate_f, c], f"kept_{i}"), node("Mul", [gate_i, gate_c], f"written_{i}")],
                     f"new_c_{i}")
        new_h = node("Mul", [gate_o, node("Tanh", [new_c], f"tanh_c_{i}")], f"new_h_{i}")
        pair = node("Concat", [node("Unsqueeze", [new_h, "axis_0"], f"h3_{i}"),
                               node("Unsqueeze", [new_c, "axis_0"], f"c3_{i}")], f"pair_{i}", axis=0)
        pairs.append(node("Unsqueeze", [pair, "axis_0"], f"pair4_{i}"))
        below = new_h
    if layers == 1:
        nodes.append(helper.make_node("Identity", pairs, ["new_state"], name="new_state"))
    else:
        nodes.append(helper.make_node("Concat", pairs, ["new_state"], name="new_state", axis=0))
    const("out_kernel", arrays.out_kernel)
    const("out_bias", arrays.out_bias)
    nodes.append(helper.make_node("Add", [node("MatMul", [below, "out_kernel"], "out_matmul"), "out_bias"],
                                  ["logits"], name="logits"))
    float32, int64 = onnx.TensorProto.FLOAT, onnx.TensorProto.INT64
    state_shape = [layers, 2, "batch", units]
    graph = helper.make_graph(
        nodes, "textgen_step",
        inputs=[helper.make_tensor_value_info("ids", int64, ["batch"]),
                helper.make_tensor_value_info("state", float32, state_shape)],
        outputs=[helper.make_tensor_value_info("logits", float32, ["batch", arrays.vocab_size]),
                 helper.make_tensor_value_info("new_state", float32, state_shape)],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="textgen", producer_version=arrays.version)
    model.ir_version = 8  # readable by onnxruntime 1.14 and later
    model.doc_string = (f"textgen character LSTM '{arrays.run}': one step per character. "
                        "Inputs ids int64 [batch], state float32 [num_layers, 2, batch, units] (h then c, "
                        "zeros = start); outputs logits [batch, vocab], new_state.")
    metadata = arrays.metadata()
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key = key
        entry.value = json.dumps(value, ensure_ascii=False) if key == "vocab" else str(value)
    onnx.checker.check_model(model, full_check=True)
    return model


def write(arrays: ModelArrays, path) -> None:
    """Write the ONNX file of `arrays` to `path` (the caller renames it into place)."""
    model = build(arrays)
    with open(path, "wb") as f:
        f.write(model.SerializeToString())
