"""Real-robot episode ingest: LeRobot, ROS 2 bags (MCAP), HDF5 and plain folders into the corpus.

    from flywheel.corpus import Corpus
    from flywheel.ingest import IngestConfig, ingest

    report = ingest(["data/my_lerobot_dataset"], Corpus.open_or_create(path), IngestConfig())
    report.accepted, report.quarantined, report.duplicates

Each format is one adapter module (`lerobot`, `ros2_bag`, `hdf5`, `directory`) that only reads;
`alignment` puts streams on the control grid, `assemble` builds the corpus episode, `runner`
commits or quarantines each source episode on its own. See docs/ingest.md.
"""

from flywheel.ingest.alignment import Alignment, AlignmentConfig, Stream, align, control_grid
from flywheel.ingest.assemble import Recording, assemble
from flywheel.ingest.config import FORMATS, IngestConfig, parse_size
from flywheel.ingest.errors import IngestError, MappingError
from flywheel.ingest.formats import ADAPTERS, detect_format
from flywheel.ingest.mapping import Mapping, TopicMap, load_mapping, parse_mapping
from flywheel.ingest.runner import IngestReport, ingest

__all__ = [
    "ADAPTERS",
    "FORMATS",
    "Alignment",
    "AlignmentConfig",
    "IngestConfig",
    "IngestError",
    "IngestReport",
    "Mapping",
    "MappingError",
    "Recording",
    "Stream",
    "TopicMap",
    "align",
    "assemble",
    "control_grid",
    "detect_format",
    "ingest",
    "load_mapping",
    "parse_mapping",
    "parse_size",
]
