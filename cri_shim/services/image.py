"""ImageService: ListImages, ImageStatus, PullImage, RemoveImage and ImageFsInfo over the image store."""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

from cri_shim.api import api_pb2 as api
from cri_shim.errors import DeadlineExceeded, InvalidArgument
from cri_shim.image import auth, reference
from cri_shim.image.imageconfig import user_identity
from cri_shim.image.usage import mountpoint_of
from cri_shim.image.records import ImageRecord

if TYPE_CHECKING:
    from cri_shim.daemon import Daemon


class ImageService:
    """Thin handlers: the store answers lists and status from memory; pulls go to the puller."""

    def __init__(self, daemon: Daemon) -> None:
        self.store = daemon.images
        self.puller = daemon.puller

    def _image(self, record: ImageRecord) -> api.Image:
        uid, username = user_identity(self.store.config(record).user)
        image = api.Image(
            id=record.image_id,
            repo_tags=record.repo_tags,
            repo_digests=record.repo_digests,
            size=record.size,
            username=username,
            pinned=self.store.pinned(record),
        )
        if uid is not None:
            image.uid.value = uid
        return image

    async def ListImages(self, request: api.ListImagesRequest, context: Any) -> api.ListImagesResponse:
        wanted = request.filter.image.image if request.HasField("filter") else ""
        if wanted:
            found = self.store.find(wanted)
            records = [found] if found is not None else []
        else:
            records = self.store.list()
        return api.ListImagesResponse(images=[self._image(r) for r in records])

    async def ImageStatus(self, request: api.ImageStatusRequest, context: Any) -> api.ImageStatusResponse:
        record = self.store.find(_image_text(request.image))
        if record is None:
            return api.ImageStatusResponse()
        response = api.ImageStatusResponse(image=self._image(record))
        if request.verbose:
            config = self.store.config(record)
            response.info["info"] = json.dumps({
                "id": record.image_id,
                "repoTags": record.repo_tags,
                "repoDigests": record.repo_digests,
                "size": record.size,
                "chainIDs": record.chain_ids,
                "layers": [{"diffID": d, "chainID": c} for d, c in zip(config.diff_ids, record.chain_ids)],
                "config": config.raw,
            })
        return response

    async def PullImage(self, request: api.PullImageRequest, context: Any) -> api.PullImageResponse:
        ref = reference.parse(_image_text(request.image))
        creds = auth.from_request(request.auth if request.HasField("auth") else None)
        remaining = context.time_remaining() if context is not None else None
        pull = self.puller.pull(ref, creds)
        try:
            record = await (asyncio.wait_for(pull, remaining) if remaining is not None else pull)
        except TimeoutError:
            raise DeadlineExceeded(f"pull of {ref} did not finish before the client's deadline") from None
        return api.PullImageResponse(image_ref=record.image_id)

    async def RemoveImage(self, request: api.RemoveImageRequest, context: Any) -> api.RemoveImageResponse:
        await self.store.remove(_image_text(request.image))
        return api.RemoveImageResponse()

    async def ImageFsInfo(self, request: api.ImageFsInfoRequest, context: Any) -> api.ImageFsInfoResponse:
        used, inodes = self.store.usage()
        usage = api.FilesystemUsage(
            timestamp=time.time_ns(),
            fs_id=api.FilesystemIdentifier(mountpoint=mountpoint_of(self.store.root)),
            used_bytes=api.UInt64Value(value=used),
            inodes_used=api.UInt64Value(value=inodes),
        )
        return api.ImageFsInfoResponse(image_filesystems=[usage])


def _image_text(spec: api.ImageSpec) -> str:
    if not spec.image:
        raise InvalidArgument("image.image must name an image (tag, digest reference or ID)")
    return spec.image
