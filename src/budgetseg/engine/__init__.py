"""The task-independent machinery that runs networks: batches for training (batches.py), the training loop
(train.py), inference over a dataset with sliding windows (infer.py), inputs and precision on the device
(device.py), resizing predictions back to their images' sizes (resize.py). What a network computes and how its
outputs become predictions is the task's (budgetseg.task.Task); the engine only calls it."""
