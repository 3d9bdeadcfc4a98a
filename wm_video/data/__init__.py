"""Episode-clip data: schema, shard writing and reading, the streaming loader, collection and inspection."""

from wm_video.data.schema import SCHEMA_VERSION, ActionSpace, Clip, ClipMeta, DatasetInfo, SchemaError

__all__ = ["SCHEMA_VERSION", "ActionSpace", "Clip", "ClipMeta", "DatasetInfo", "SchemaError"]
