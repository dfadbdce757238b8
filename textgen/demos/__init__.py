"""Demos apart from the language model: the MNIST Dense classifier and the single-neuron perceptron.

`textgen mnist` and `textgen perceptron` (textgen/cli/demos.py) present them; nothing in the
language model imports from here.
"""
