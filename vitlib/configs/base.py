"""Every key a training config may hold, with its default. Named configs start from here."""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.dataset = "fashion_mnist"  # fashion_mnist | digits | any TFDS name
    # How training images reach the model (vitlib.data):
    # - "memory": the whole split decoded into memory once (fashion_mnist, digits, small TFDS
    #   sets with fixed-size images), batches and ``augment`` below computed in numpy;
    # - "grain": encoded (JPEG) records of a TFDS array_record dataset read at random, decoded
    #   and augmented per batch as in the paper (inception crop, flip, values in [-1, 1]) by
    #   grain, in ``workers`` processes; needs ``image_size``. Evaluation resizes and
    #   centre-crops. Either way batch s is a pure function of (seed, s).
    c.input = ml_collections.ConfigDict(dict(
        pipeline="memory",
        workers=0,  # grain worker processes; 0 = decode in the training process (threads)
        threads=8,  # decoding threads per process (PIL releases the GIL while decoding)
        worker_buffer=2,  # batches each worker prepares ahead
        crop="inception",  # training crop: inception (area min_area..1, aspect 3/4..4/3) | resize
        min_area=0.05,  # the inception crop's smallest area, as a fraction of the image
        flip=True,  # random horizontal flip (training)
        label_key="label",  # the dataset's label feature (cifar100 also has coarse_label)
        bad_images="skip",  # an undecodable image: skip (replaced, counted in metrics) | fail
        # JPEG decoder (vitlib.data.image_ops; the resize is OpenCV's bilinear without
        # antialiasing, as tf.image.resize): simplejpeg-rows (decodes only the block rows down
        # to the crop's last; measured fastest, 1.18x tf.data per core) | opencv | pil |
        # simplejpeg
        decoder="simplejpeg-rows",
    ))
    c.data_dir = ""  # TFDS data dir; "" = $TFDS_DATA_DIR or ~/tensorflow_datasets
    c.train_split = "train"
    # Train on the first N examples of a fixed permutation of train_split (nested: a smaller
    # set lies inside a larger one); 0 = all of it.
    c.train_examples = 0
    c.eval_splits = ("test", "minival")
    c.seed = 0  # parameter init and batch order

    # width, depth, mlp_dim, num_heads: 0 = the variant's; others override it (custom shapes).
    c.model = ml_collections.ConfigDict(dict(
        variant="Pico/4", width=0, depth=0, mlp_dim=0, num_heads=0, pool_type="gap",
        posemb="learn", representation_size=0, dtype="float32", param_dtype="float32",
        scan=False, remat_policy="none",
        # Initial classifier bias; negative with the sigmoid loss on many classes (-10 for
        # ImageNet-21k, -6.9 for ImageNet-1k, as big_vision).
        head_bias_init=0.0,
        # A patch that does not tile the image drops the remainder pixels (VALID patchify);
        # training refuses that unless this is True.
        drop_remainder_pixels=False,
        # Attention kernel: "xla" (Flax's einsum attention) or "cudnn" (jax.nn's fused
        # dot_product_attention; NVIDIA GPUs only).
        attention="xla"))
    c.image_size = 0  # input resolution; 0 = the dataset's own (others: bilinear resize)
    c.loss = "softmax"  # softmax | sigmoid (cross-entropy)
    c.label_smoothing = 0.0  # in [0, 1): targets mixed with the uniform distribution

    c.batch_size = 256
    c.total_steps = 1000
    # Examples per micro-batch: gradients of the slices are averaged before one update (same
    # gradient, smaller activations). 0 = automatic: 32 per device on CPU, whole batch elsewhere.
    c.micro_batch_size = 0
    c.optim = ml_collections.ConfigDict(dict(
        optimizer="adam", optimizer_kwargs={}, lr=1e-3, grad_clip_norm=1.0,
        schedule=dict(kind="cosine", warmup_steps=100, cooldown_steps=0, timescale=10_000,
                      end_value=0.0),
        weight_decay=[(r".*", 1e-4)]))
    c.augment = ml_collections.ConfigDict(dict(crop_padding=0, flip=False))

    c.log_every = 50  # steps between loss/throughput records
    c.eval_every = 0  # steps between evaluations; 0 = only at the end
    # Intermediate evaluations on a fixed random subset of this many examples per split (the
    # final evaluation always uses whole splits); 0 = whole splits every time.
    c.eval_subset = 0
    c.checkpoint_every = 0  # steps between checkpoints; 0 = only at the end
    # Steps whose state is kept for good (``branch_points/``): cooldown branches start there.
    c.checkpoint_steps = ()
    c.eval_batch_size = 1000

    # Few-shot linear probe on frozen pre-logits, run with every evaluation ("" = off): shots
    # drawn from the dataset's train split, accuracy on each of eval_splits (test, minival).
    # ``suite``: the few-shot suite of JPEG datasets (vitlib.evals.suite), each entry a name
    # ("cifar100") or "name:train_split:eval_split"; ("paper",) is the paper's four
    # (ImageNet, CIFAR-100, Pets, Birds); images resized and centre-cropped to image_size.
    # ``l2``: "loso" (chosen per draw by leave-one-shot-out) or "fixed" (big_vision's 2^10
    # with a constant bias feature). ``every``: steps between few-shot evaluations (0 = with
    # every evaluation); the final evaluation always runs it. ``cache_gib``: memory (per
    # process) for the suite's decoded images, kept between evaluations (0 = decode each time;
    # ImageNet's train[:65000] + validation at 224 px take ~16 GiB on one host).
    c.fewshot = ml_collections.ConfigDict(dict(
        dataset="digits", shots=(10,), seeds=(0, 1, 2), eval_splits=("test",), suite=(),
        l2="loso", every=0, cache_gib=0.0))

    c.fsdp = False  # shard parameters and optimizer state over the mesh (large models)
    return c
