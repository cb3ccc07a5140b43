"""The original report's model and recipe on clean CIFAR-10; declares every field the project reads.

    python main.py --config=configs/default.py

25 epochs of Adam at batch 128, then the evaluation: test MSE about 0.0221, P@10 about 0.286 /
0.281 / 0.284 (Euclidean / Manhattan / cosine); about 20 minutes on a 2-core CPU, 1 on a GPU.
"""

import ml_collections


def get_config():
  config = ml_collections.ConfigDict()
  config.seed = 0  # one seed drives init, shuffling and noise

  config.data = data = ml_collections.ConfigDict()
  data.source = 'auto'  # 'auto' | 'dir' | 'tfds' | 'synthetic'; auto = data.dir, else $CIFAR10_DIR, else tfds
  data.dir = ''  # local CIFAR-10 binary (or python pickle) directory
  data.tfds_dir = ''  # tfds data_dir; '' = tfds default (~/tensorflow_datasets)
  data.num_train = 0  # use the first N training images; 0 = all
  data.num_test = 0  # use the first N test images; 0 = all
  data.synthetic_train = 2048  # synthetic source only: number of training images
  data.synthetic_test = 512  # synthetic source only: number of test images

  config.model = model = ml_collections.ConfigDict()
  model.latent_dim = 10  # bottleneck units
  model.encoder_features = (32, 64, 128)  # conv widths; a 2x2 max pool between consecutive convs
  model.encoder_padding = 'VALID'  # 'VALID' (the report's) | 'SAME'
  model.norm = 'none'  # encoder normalisation: 'none' (the report's) | 'group'
  model.encoder_dense = ()  # relu dense widths between the convs and the bottleneck; () = none
  model.encoder_dropout = 0.0  # dropout rate on the inputs of those dense layers and the bottleneck
  model.decoder = 'dense'  # 'dense' (the report's: dense layers, reshape) | 'conv' (sub-pixel convs)
  # dense decoder: hidden widths; conv decoder: channels per 2x upsampling from 4x4
  model.decoder_features = (512, 1024, 2048)
  model.conv_impl = 'auto'  # 'auto': the forms fastest on the platform (ae/cpu/) | 'flax': nn.Conv

  config.train = train = ml_collections.ConfigDict()
  train.batch_size = 128  # global batch, split across all devices
  train.num_epochs = 25
  train.optimizer = 'adam'  # 'adam' | 'adamw'
  train.learning_rate = 1e-3  # peak learning rate
  train.schedule = 'constant'  # 'constant' | 'cosine' (linear warm-up, then cosine decay to 0)
  train.warmup_steps = 0  # linear warm-up steps of the 'cosine' schedule
  train.weight_decay = 0.0  # adamw only
  train.noise_std = 0.0  # std of Gaussian noise on the inputs (0 = clean, 0.1 = the report's)
  train.random_noise_std = False  # draw each image's noise std uniformly from [0, noise_std]
  train.random_flip = False  # mirror each training image left-right with probability 1/2
  train.random_shift = 0  # translate each training image by up to this many pixels (reflect fill)
  train.init_from = ''  # workdir or checkpoint dir of another run to start from (fresh optimizer)
  train.steps_per_jit = 1  # train steps per jitted call (lax.scan); >1 amortises dispatch on GPU/TPU
  train.log_every_steps = 50  # progress line and metrics.jsonl record interval
  train.checkpoint_every_steps = 500  # orbax save interval (also saved at the end)
  train.eval_batch_size = 1000  # batch for test MSE and encoding; rounded up to a multiple of devices

  config.eval = ev = ml_collections.ConfigDict()
  ev.enabled = True  # evaluate after training
  ev.k = 10  # neighbours per query in grids and stdout
  ev.metrics = ('euclidean', 'manhattan', 'cosine')
  ev.noise_std = 0.1  # noise for the denoising figures and noisy-query retrieval
  ev.umap_points = 5000  # test points in the UMAP projection (0 = skip UMAP)
  ev.retrieval_queries = 0  # test queries for P@k/mAP; 0 = all
  ev.reference_queries = 1000  # test queries for the raw-pixel reference (3072-D search is slow)
  ev.map_queries = 1000  # test queries for mAP@1000 (a top-1,000 search is slow); 0 = all
  ev.refine_steps = 0  # >0: also report the test MSE of codes refined by this many Adam steps
  #                      each through the decoder (eval/refine.py)
  ev.refine_lr = 0.05  # Adam learning rate of that refinement
  ev.query_chunk = 2048  # queries per distance tile
  ev.gallery_chunk = 16384  # gallery items per distance tile
  ev.max_image_pixels = 4096 * 4096  # query mode refuses larger images before decoding
  return config
