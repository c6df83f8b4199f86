"""Names and defaults shared by measuring and reporting code, kept free of torch so that
`bench report`, `bench compare` and `--help` start in a fraction of a second."""

STEP_WORKLOADS = ("forward", "forward_backward", "train_step")
WORKLOADS = (*STEP_WORKLOADS, "epoch", "train")
LOADERS = ("torchvision", "resident")
DATASETS = ("auto", "mnist", "fashion-mnist", "synthetic")
DATA_DIR_ENV = "BENCH_DATA_DIR"
CHAPTER_BATCH_SIZE = 64
DEFAULT_BATCH_SIZES = (16, CHAPTER_BATCH_SIZE, 256, 1024, 4096)
QUICK_BATCH_SIZES = (CHAPTER_BATCH_SIZE, 1024)
