"""Export to robots: a policy's sampler as a self-contained ONNX or TorchScript graph, and the robot-side Controller.

* :mod:`rlft.export.controller` runs an exported folder with numpy + onnxruntime only (no torch, no
  training code); it is the module to copy to a robot.
* :mod:`rlft.export.exporter` writes the folder (graph + ``controller.json``) from a trained policy
  and checks the exported graph against PyTorch.

This package's ``__init__`` imports nothing, so importing the controller never pulls in torch.
"""
