"""Forms and settings that make the model fast on XLA:CPU, kept apart from the model they speed up.

On CPU devices the train step spends its time in the convolutions' gradients, the pooling and the
memory traffic between them; XLA:CPU runs some forms of the same computation several times faster
than others (benchmarks/RESULTS.md has every measurement). Nothing here changes a result beyond
float rounding:

- conv.py: the model's convolution layer computed as image patches times one matrix product, or
  as XLA's own convolution with both gradients written as convolutions (lowerings.py), the first
  pooled convolution by pooling phases (phase_conv.py). model.conv_impl='auto' (the default)
  uses them; 'flax' uses nn.Conv and nn.max_pool instead, with the same parameters.
- compiler_options.py: XLA options for the train step and the forward-only programs on CPU
  devices.
- host_memory.py: glibc settings that let XLA:CPU reuse its temporaries from step to step.
"""
