"""Made with tinycnn at commit 4de136b (before the trainer split and Keras-order Flatten): model files and their
predictions on a fixed input, for tests/test_old_model_files.py."""
import sys
import numpy as np
import tinycnn
from tinycnn import layers
out = sys.argv[1]
tinycnn.manual_seed(11)
x = (np.arange(2 * 6 * 6, dtype=np.float32).reshape(2, 6, 6, 1) % 7) / 7
seq = tinycnn.Sequential([layers.Conv2D(3, 3, activation="relu", input_shape=(6, 6, 1)), layers.Flatten(),
                          layers.Dense(2, activation="softmax")])
seq.compile(loss="categorical_crossentropy", optimizer="adam")
seq.fit(x, np.eye(2, dtype=np.float32), epochs=1, verbose=0)
seq.save(f"{out}/old_sequential.tcnn")
inputs = tinycnn.Input((6, 6, 1))
h = layers.Conv2D(3, 3, activation="relu")(inputs)
fun = tinycnn.Model(inputs, layers.Dense(1)(layers.Flatten()(h)))
fun.compile(loss="mse")
fun.fit(x, np.ones((2, 1), np.float32), epochs=1, verbose=0)
fun.save(f"{out}/old_functional.tcnn")
np.savez(f"{out}/old_predictions.npz", x=x, sequential=seq.predict(x), functional=fun.predict(x))
