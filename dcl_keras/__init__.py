"""dcl_keras: Destruction and Construction Learning (CVPR 2019) in Keras 3."""

__version__ = "0.1.0"
