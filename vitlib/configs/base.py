"""Every key a training config may hold, with its default. Named configs start from here."""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.dataset = "fashion_mnist"  # fashion_mnist | digits | any TFDS name
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
        scan=False, remat_policy="none"))
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
    c.fewshot = ml_collections.ConfigDict(dict(
        dataset="digits", shots=(10,), seeds=(0, 1, 2), eval_splits=("test",)))

    c.fsdp = False  # shard parameters and optimizer state over the mesh (large models)
    return c
