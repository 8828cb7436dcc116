"""Metrics: semantic mIoU/mAcc (confusion matrix), instance AP (ScanNet's protocol)."""
