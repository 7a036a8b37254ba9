"""`python tests/pipeline/gcs_emulator.py start --host H --port P --in-memory`: the gcp-storage-emulator server
(same arguments as `python -m gcp_storage_emulator`), plus the one GCS feature it lacks and our job lock relies
on: the `ifGenerationMatch` precondition of uploads and deletes (0 = "only if absent"), answered 412 as real GCS
does. Its server handles one request at a time, so the check and the write below cannot interleave."""
import sys
from http import HTTPStatus

from gcp_storage_emulator import server
from gcp_storage_emulator.__main__ import main
from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import objects


def _precondition_failed(request, response, storage, object_id) -> bool:
    wanted = request.query.get("ifGenerationMatch")
    if not wanted or object_id is None:
        return False
    try:
        current = storage.get_file_obj(request.params["bucket_name"], object_id)["generation"]
    except NotFound:
        current = "0"
    if str(current) == wanted[0]:
        return False
    response.status = HTTPStatus.PRECONDITION_FAILED
    response.json({"error": {"code": 412, "message": "conditionNotMet",
                             "errors": [{"reason": "conditionNotMet", "message": "Precondition Failed"}]}})
    return True


def _upload_name(request):
    if "name" in request.query:
        return request.query["name"][0]
    data = request.data
    meta = data.get("meta") if isinstance(data, dict) else None
    return meta.get("name") if isinstance(meta, dict) else None


def _guarded(handler, name_of):
    def guarded(request, response, storage, *args, **kwargs):
        if not _precondition_failed(request, response, storage, name_of(request)):
            return handler(request, response, storage, *args, **kwargs)
    return guarded


_REPLACE = {objects.insert: _guarded(objects.insert, _upload_name),
            objects.delete: _guarded(objects.delete, lambda r: r.params["object_id"])}
for _, handlers in server.HANDLERS:
    for method, handler in list(handlers.items()):
        handlers[method] = _REPLACE.get(handler, handler)
objects.insert = _REPLACE[objects.insert]  # the router's fallback for uploads looks it up by name

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
