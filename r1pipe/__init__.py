"""r1pipe: the DeepSeek-R1 training recipe as four configured stages."""

__version__ = "0.1.0"
