from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class WatchRequest(_message.Message):
    __slots__ = ("model", "ref", "after")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REF_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    model: str
    ref: str
    after: int
    def __init__(self, model: _Optional[str] = ..., ref: _Optional[str] = ..., after: _Optional[int] = ...) -> None: ...

class VersionUpdate(_message.Message):
    __slots__ = ("seq", "model", "ref", "entry_json")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REF_FIELD_NUMBER: _ClassVar[int]
    ENTRY_JSON_FIELD_NUMBER: _ClassVar[int]
    seq: int
    model: str
    ref: str
    entry_json: str
    def __init__(self, seq: _Optional[int] = ..., model: _Optional[str] = ..., ref: _Optional[str] = ..., entry_json: _Optional[str] = ...) -> None: ...
