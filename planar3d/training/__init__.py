"""One fold's training: optimizer, resumable fit, run folder, segmentation and classification folds."""
