"""Fields shared by every experiment, and the variants every experiment config offers.

Each experiment's config is `experiment(...)` with its backbones and
modalities; a variant after a colon (`configs/hybrid.py:demo`) adjusts it.
"""

import ml_collections

DEMO_VARIANT = 'demo'


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  # Compiled programs are kept here and reused by later runs (resume,
  # evaluate); '' turns the cache off. JAX_COMPILATION_CACHE_DIR, where set,
  # takes precedence.
  config.compilation_cache_dir = '~/.cache/hybridcovid/jax'
  # Deterministic GPU kernels (CPU results are deterministic already): a
  # resumed run then ends exactly like an uninterrupted one.
  config.deterministic = False
  # Multi-process runs: the coordinator's host:port (or JAX_COORDINATOR_ADDRESS),
  # the number of processes and this process's index; 0/-1 let JAX take them
  # from the cluster environment. Without an address, one process.
  config.distributed = ml_collections.ConfigDict()
  config.distributed.coordinator_address = ''
  config.distributed.num_processes = 0
  config.distributed.process_id = -1
  # How training, evaluation and the benchmark run on several devices:
  # 'shard_map' (jit over shard_map, a state replicated over a mesh) or 'pmap'
  # (a state with a leading device axis); both give the same result.
  config.parallel = 'shard_map'

  config.model = ml_collections.ConfigDict()
  # One backbone gives the paper's single-model classifier, two the hybrid.
  config.model.backbones = ('resnet50', 'efficientnetb0')
  config.model.hidden_units = 256
  config.model.dropout_rate = 0.5
  config.model.dtype = 'float32'  # Compute dtype: 'float32' or 'bfloat16'.
  # Convolutions, depthwise convolutions and max pooling: 'xla' (XLA's own
  # ops, what a GPU runs), 'cpu' (matrix-product and shifted-window forms,
  # fast on XLA's CPU backend) or 'auto' ('cpu' on CPU, else 'xla').
  config.model.conv_impl = 'auto'
  # Backbones in inference mode (running BatchNorm statistics) while training.
  config.model.freeze_backbone_batchnorm = False
  # Decay of the running BatchNorm statistics used at evaluation (Keras: 0.99).
  config.model.batchnorm_momentum = 0.99
  # Start each backbone's residual blocks as the identity (their last BatchNorm
  # scale at zero, as torchvision's zero_init_residual): for training from
  # random weights. Converted ImageNet weights replace it.
  config.model.zero_init_residual = False
  # Directories written by `python -m hybridcovid.convert`; '' keeps the
  # backbone randomly initialised.
  config.model.pretrained = ml_collections.ConfigDict(
      {'resnet50': '', 'efficientnetb0': ''})

  config.train = ml_collections.ConfigDict()
  config.train.epochs = 100
  config.train.batch_size = 32
  config.train.optimizer = 'adam'  # 'adam' (AdamW when weight_decay > 0) or 'sgd'.
  config.train.learning_rate = 1e-3
  config.train.schedule = 'constant'  # Or 'warmup_cosine'.
  config.train.warmup_epochs = 0.0
  config.train.weight_decay = 0.0
  config.train.gradient_clip_norm = 0.0  # 0 turns clipping off.
  # Transfer learning: train only the head for this many epochs, then
  # fine-tune the backbones at this fraction of the learning rate.
  config.train.head_only_epochs = 0
  config.train.finetune_learning_rate_factor = 0.1
  # The head's learning rate as a fraction of the backbones'. Adam moves every
  # weight of a hidden unit by about the learning rate at each step, and the
  # pooled features it reads are all positive, so a large rate can push a unit
  # below zero for every image for good.
  config.train.head_learning_rate_factor = 1.0
  # The validation metric that picks the checkpoint evaluated on test.
  config.train.selection_metric = 'accuracy'

  # Test-set reporting: every metric gets a bootstrap confidence interval,
  # resampling patients (all images of a patient together).
  config.eval = ml_collections.ConfigDict()
  config.eval.bootstrap_resamples = 1000
  config.eval.bootstrap_seed = 0
  config.eval.confidence_level = 0.95
  # The decision threshold is chosen on the validation split as the highest
  # that reaches this sensitivity (recall); test is reported at 0.5 and at it.
  config.eval.target_sensitivity = 0.95
  # The report also decides per patient (each patient's images of one modality
  # make one study): 'mean_logit' of its images, 'max' or 'mean_probability'.
  # Its threshold and temperature are fitted on the validation patients.
  config.eval.patient_aggregation = 'mean_logit'
  # The report explains this many test images of each outcome (true and false
  # positives and negatives, the most confident first) with Grad-CAM.
  config.eval.gradcam_per_outcome = 2
  # Also train one model per data source on all the other sources and test
  # it on the one left out (WORKDIR/leave_one_source_out/<source>/).
  config.eval.leave_one_source_out = False

  # --mode=benchmark: throughput of the train step and of inference on
  # synthetic inputs at data.image_size, each case in a fresh process.
  config.benchmark = ml_collections.ConfigDict()
  config.benchmark.modes = ('train', 'inference')
  config.benchmark.batch_sizes = (8, 32)  # Global batches; add 128 on a GPU.
  config.benchmark.dtypes = ('float32',)  # Compute dtypes: 'float32', 'bfloat16'.
  config.benchmark.warmup_steps = 2
  config.benchmark.steps = 5
  # Also run the peers of benchmarks/peers/ (Keras, PyTorch) on the same cases.
  config.benchmark.peers = False
  config.benchmark.timeout_seconds = 3600.0  # Per case and framework.

  config.data = ml_collections.ConfigDict()
  # Where the data come from: the paper's data sets (manual downloads; layout
  # 'radiography' / 'ctscan', or 'folder' for a folder of your own), any
  # folder of images with optional manifest.csv, or the built-in synthetic set.
  config.data.cxr_dir = ''
  config.data.cxr_layout = 'radiography'
  config.data.ct_dir = ''
  config.data.ct_layout = 'ctscan'
  config.data.folder_dir = ''
  config.data.synthetic = False
  config.data.synthetic_seed = 0
  config.data.synthetic_patients_per_class = 40
  config.data.synthetic_image_size = 128
  config.data.synthetic_dir = ''  # Where it is written; '' is WORKDIR/synthetic_data.
  config.data.modalities = ('cxr', 'ct')  # Pooled; one of them for a single modality.
  # 'normal,covid', the paper's task, or 'normal,covid,pneumonia' to tell other
  # pneumonia apart too; a modality without pneumonia images (the paper's CT
  # data) is then left out, with a warning.
  config.data.classes = 'normal,covid'
  # Where prepared (decoded, shrunk) images are kept: '' is WORKDIR/prepared_data,
  # removed with the work directory. Runs on the same data can share one
  # folder, e.g. ~/.cache/hybridcovid/prepared; delete it to free the space.
  config.data.tfds_dir = ''
  # Prepared images are stored with their longer side at most this many
  # pixels (0 keeps them whole); prediction shrinks its inputs alike.
  config.data.max_stored_side = 512
  config.data.prepare_processes = 0  # Processes decoding files; 0 uses every core.
  config.data.skip_bad = False  # Skip unreadable files (listed in audit.json).
  config.data.ct_window_level = -600.0  # Lung window for DICOM CT, in HU.
  config.data.ct_window_width = 1500.0
  # train / test / validation, as in the paper; grouped by patient.
  config.data.split_fractions = (0.7, 0.2, 0.1)
  config.data.split_file = ''  # '' writes and reuses WORKDIR/split.json.
  # Test on every image of this source, train and validate on the other
  # sources' train and validation images ('' for the usual split).
  config.data.held_out_source = ''
  config.data.drop_duplicates = True  # Drop cross-split copies from test/validation.
  # Grey 16x16 thumbnails correlating at least this much are near duplicates.
  config.data.near_duplicate_correlation = 0.99
  config.data.image_size = 224
  config.data.resize = 'pad'  # 'pad' keeps the aspect ratio, 'squash' stretches.
  config.data.balance = 'resample'  # 'resample', 'class_weights' or 'none'.
  config.data.shuffle_buffer = 512
  config.data.augment = ml_collections.ConfigDict()
  config.data.augment.rotation_degrees = 10.0
  config.data.augment.shift_fraction = 0.1
  config.data.augment.zoom_fraction = 0.1
  config.data.augment.brightness = 0.1  # Fraction of the full range.
  config.data.augment.contrast = 0.1
  config.data.augment.horizontal_flip = False  # Anatomy is not mirror-symmetric.
  return config


def demo(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The same model and code path on the built-in synthetic data, small enough to
  train in a few minutes on a laptop CPU, from random weights (no downloads)."""
  config.data.synthetic = True
  config.data.synthetic_patients_per_class = 120
  # The smallest size at which both backbones' last feature maps are still 2x2
  # (32x32 leaves 1x1, and Grad-CAM nothing to show).
  config.data.image_size = 40
  config.model.batchnorm_momentum = 0.9  # Running statistics settle within a few steps.
  # From random weights, a deep network's pooled features barely differ between
  # images until its residual blocks start as the identity.
  config.model.zero_init_residual = True
  config.train.epochs = 7
  # From random weights, seven epochs are far too few for the paper's rate:
  # three times it, after a one-epoch warm-up, and a cosine decay.
  config.train.learning_rate = 3e-3
  config.train.schedule = 'warmup_cosine'
  config.train.warmup_epochs = 1.0
  # The head stays at 1e-4: at the backbones' rate most of its ReLU units die
  # within the first epochs (see head_learning_rate_factor), and with
  # augmentation training can stall at chance.
  config.train.head_learning_rate_factor = 1 / 30
  return config


VARIANTS = {DEMO_VARIANT: demo}


def experiment(backbones: tuple[str, ...], modalities: tuple[str, ...],
               variant: str | None = None) -> ml_collections.ConfigDict:
  """The paper's experiment with these backbones on these modalities, in `variant`."""
  config = get_config()
  config.model.backbones = backbones
  config.data.modalities = modalities
  if not variant:
    return config
  if variant not in VARIANTS:
    raise ValueError(f'Unknown config variant {variant!r}; choose from {sorted(VARIANTS)} '
                     '(e.g. --config=configs/hybrid.py:demo).')
  return VARIANTS[variant](config)
