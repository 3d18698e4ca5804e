"""Model registry: a config names a model by string.

    model = get_model('cnn14_attn', num_classes=8, dtype=jnp.bfloat16)
    variables = model.init(rngs, x, train=False)
    logits = model.apply(variables, x, train=False, mask=None)

`x` is (batch, mel, time, channels); `mask` an optional (batch, time) bool of real frames
(used by attention pooling, accepted and ignored elsewhere). Train mode needs
`rngs={'dropout': key}` and `mutable=['batch_stats']`. Params are float32; `dtype` is the
compute dtype. Only models that are implemented and tested are registered.
"""
import functools
from typing import Any, Callable

import jax.numpy as jnp

from ser_jax.models import alexnet
from ser_jax.models import cnn14
from ser_jax.models import cnn_lstm
from ser_jax.models import cnnx
from ser_jax.models import efficientat
from ser_jax.models import resnet
from ser_jax.models import ser_cnn
from ser_jax.models import vgg

MODELS: dict[str, Callable[..., Any]] = {
    'cnn14': functools.partial(cnn14.CNN14, head='gap'),
    'cnn14_attn': functools.partial(cnn14.CNN14, head='attention'),
    'cnn14_panns': cnn14.CNN14PANNs,  # get_model's default is 8 classes; AudioSet's is 527
    'cnnx': cnnx.CNNX,
    'cnn_lstm': cnn_lstm.CNNLSTM,
    'vgg19_attn': vgg.VGG19Attn,
    'alexnet_attn': alexnet.AlexNetAttn,
    'resnet18': resnet.ResNet18,
    # EfficientAT MobileNetV3 at the published widths: efficientat_mn01 (0.1) ..
    # efficientat_mn40 (4.0). get_model's default is 8 classes; AudioSet's is 527.
    **{f'efficientat_mn{round(10 * w):02d}': functools.partial(efficientat.MobileNetV3,
                                                              width_mult=w)
       for w in efficientat.WIDTHS},
    'ser_cnn': ser_cnn.SERCNN,
}


def get_model(name, *, num_classes=8, dtype=jnp.float32, **kwargs):
  """Builds the registered model `name` (see `MODELS`).

  Args:
    name: registry name, e.g. 'cnn14', 'cnnx'.
    num_classes: output classes.
    dtype: compute dtype (jnp dtype or its name, e.g. 'bfloat16'); params stay float32.
    **kwargs: extra constructor arguments of that model.

  Returns:
    An unbound flax.linen Module.

  Raises:
    ValueError: `name` is not registered.
  """
  if name not in MODELS:
    raise ValueError(f'Unknown model {name!r}; known models: {", ".join(sorted(MODELS))}')
  return MODELS[name](num_classes=num_classes, dtype=jnp.dtype(dtype), **kwargs)
