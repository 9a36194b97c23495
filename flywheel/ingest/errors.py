"""Why a source episode was refused: the file, the field in that file, and the problem.

A person fixing a recorder needs all three, in the recorder's own names (`observation.state` in
`data/chunk-000/file-000.parquet`, topic `/joint_states`), not in the corpus's names, so adapters
raise `IngestError` with source names and the runner turns it into a quarantine record.
"""

from __future__ import annotations

from flywheel.corpus import BadEpisodeError


class IngestError(Exception):
    """A source episode cannot become a corpus episode; names file, field and problem."""

    def __init__(self, file: str, field: str, problem: str) -> None:
        self.file = str(file)
        self.field = field
        self.problem = problem
        super().__init__(f"{self.file}: {field}: {problem}")

    def to_bad_episode(self, episode: str) -> BadEpisodeError:
        """The corpus's error type, so the record goes through the corpus quarantine."""
        return BadEpisodeError(episode, self.field, f"{self.file}: {self.problem}")


class MappingError(ValueError):
    """A mapping file (TOML/YAML) is malformed: a user error for the whole run, not one episode."""
