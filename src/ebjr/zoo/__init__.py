"""Small architectures written in the project (the quickstart pair, CIFAR benchmarks).

Each builder is a plain function returning an ``nn.Module``, so a bundle can
name it as a factory (``"ebjr.zoo.digits:make_teacher"``). Importing this
package does not import torch; the submodules do.
"""
