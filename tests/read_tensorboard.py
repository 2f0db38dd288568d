"""Prints every scalar TensorBoard's own reader finds in a directory of event files, as JSON
{tag: [[step, value], ...]}: the readback check of test_checkpoint (Ckpt.TensorBoard...).

    python tests/read_tensorboard.py RUN_DIR/tb
"""
import json
import sys

from tensorboard.backend.event_processing import event_accumulator

acc = event_accumulator.EventAccumulator(sys.argv[1], size_guidance={event_accumulator.SCALARS: 0})
acc.Reload()
print(json.dumps({tag: [[e.step, e.value] for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}))
