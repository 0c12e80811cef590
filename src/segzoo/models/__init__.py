"""The four segmentation models and the registry that names them."""
