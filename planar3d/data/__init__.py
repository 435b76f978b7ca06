"""From scans to training data: preprocessing, the volume cache, splits, labels, window geometry and tf.data windows."""
