"""Turning images into masks, in one place: everything that predicts (the verbs ``infer`` and ``predict``,
validation during training, postprocessing, the G.pt evaluation, the ONNX check) goes through this package.

- :mod:`~segzoo.inference.trained`: a trained model's checkpoint, typed (regions, channels, patch,
  preprocessing, mirror axes, how it was made), and the one loader that rebuilds its network;
- :mod:`~segzoo.inference.window`: MONAI's sliding window over a preprocessed image, test-time mirroring and
  the ensemble of several models (seeds, folds);
- :mod:`~segzoo.inference.mirroring`: which flips a model may be averaged over;
- :mod:`~segzoo.inference.nnunet`: imported nnU-Net models, predicted the way nnU-Net predicts them;
- :mod:`~segzoo.inference.predictions`: the predictions folder (file names, writer, reader, the 0.5 threshold,
  label maps painted region by region);
- :mod:`~segzoo.inference.postprocess`: the largest-component rule chosen on validation;
- :mod:`~segzoo.inference.images`: folders of new images (nnU-Net's channel naming) and their checks.

It sits above ``data`` and ``models`` and below ``train``, ``interop``, ``weightgen`` and the verbs.
"""
