"""
The frames of a video as the model sees them, and the batches made of them.

Per video the method uses N evenly spaced frames (N=3: first, middle, last). They are decoded once, on every core,
and cached on disk at the size the model sees them (the pixel budget, model.Budget). Batches for the model are made
off the training thread (Batches, loader). `python data.py --data DIR --model MODEL` fills the cache ahead.
"""

import hashlib
import io
import json
import os

import numpy as np
import torch
from tqdm import tqdm

import prompt
from qwen_vl.processing import ImageTransform
from plumbing.errors import InputError, problem
from plumbing.files import atomic

# 448 x 448: the input size of the paper's Qwen-VL-Chat, 256 visual tokens a frame on Qwen2-VL / Qwen2.5-VL
DEFAULT_MAX_PIXELS = 448 * 448


# -----------------------------------------------------------------------------
# decoding the frames


def frame_indices(total, n):
    """N evenly spaced frame indices from first to last; N=3 gives first, middle, last."""
    if n == 1:
        return [(total - 1) // 2]
    return [round(i * (total - 1) / (n - 1)) for i in range(n)]


def read_frames(path, n):
    """The N frames of `frame_indices` as an (N, H, W, 3) uint8 array, decoded with PyAV."""
    return np.stack(_decode(path, n)[0])


def _decode(path, n):
    """
    The N frames of `frame_indices`, a list of (H, W, 3) uint8 arrays, and when each is shown: seconds from the
    video's first frame, or None where the file tells no time. A file that gives none says why, in one line: missing,
    empty, no video stream, no frames, a codec this FFmpeg cannot decode, or data FFmpeg rejects (its own words).

    Frames are counted in display order from the packets' timestamps (demuxed once, no decoding). Every frame up to
    the last one kept must pass through the decoder, since later frames reference earlier ones, but FFmpeg may skip
    the work of a frame that no other frame references (skip_frame NONREF) unless it is one we keep: most B-frames of
    an H.264 clip then cost nothing, and what is kept is exact (tested against full decodes). Seeks are not exact.
    """
    import av
    import av.logging

    try:
        if os.path.getsize(path) == 0:
            raise InputError(f"{path}: empty file (0 bytes), not a video")
    except FileNotFoundError:
        raise InputError(f"{path}: missing video file")
    # FFmpeg says why it rejects data in its log, not in the error: logged at this level, repeats included (PyAV
    # drops a line the same as the last, as for the previous file), it is kept to be quoted
    level, skip = av.logging.get_level(), av.logging.get_skip_repeated()
    av.logging.set_level(av.logging.ERROR)
    av.logging.set_skip_repeated(False)
    try:
        with av.logging.Capture() as log:
            try:
                return _decode_frames(path, n)
            except OSError as e:  # cannot be read at all: permissions, a folder, a device error
                raise InputError(f"{path}: cannot read ({e.strerror or e})")
            except av.FFmpegError as e:
                said = log[-1][2].strip() if log else ""
                raise InputError(f"{path}: corrupt, truncated or not a video: FFmpeg: {e.strerror}"
                                 + (f" ({said})" if said else ""))
    finally:
        av.logging.set_level(level)
        av.logging.set_skip_repeated(skip)


def _decode_frames(path, n):
    import av

    with av.open(path) as container:
        if not container.streams.video:
            held = " and ".join(sorted({s.type for s in container.streams})) or "nothing"
            raise InputError(f"{path}: no video stream (the file holds {held})")
        stream = container.streams.video[0]
        if stream.codec_context is None:
            raise InputError(f"{path}: unsupported codec: this FFmpeg has no decoder for its video stream")
        packets = [p for p in container.demux(stream) if p.size]
        if not packets:
            raise InputError(f"{path}: its video stream holds no frames")
        times = sorted(p.pts for p in packets if p.pts is not None)
        if len(times) < len(packets) or len(set(times)) < len(times):
            return _decode_all(path, n)  # no timestamps to count by: count the decoded frames
        wanted = [times[i] for i in frame_indices(len(times), n)]
        seconds = [float((t - times[0]) * stream.time_base) for t in wanted] if stream.time_base else None
        keep, frames = set(wanted), {}
        stream.thread_count = 1  # FrameCache.fill runs one decoder a core; and skip_frame is then read per packet
        for packet in packets + [None]:  # None flushes the frames the decoder still holds
            stream.codec_context.skip_frame = "DEFAULT" if packet is None or packet.pts in keep else "NONREF"
            for frame in stream.codec_context.decode(packet):
                if frame.pts in keep:
                    frames[frame.pts] = frame.to_ndarray(format="rgb24")
            if len(frames) == len(keep):
                break
    if len(frames) < len(keep):  # a frame the timestamps promised never came out of the decoder
        return _decode_all(path, n)
    return [frames[t] for t in wanted], seconds


def _decode_all(path, n):
    import av

    with av.open(path) as container:
        decoded = [(f.to_ndarray(format="rgb24"), f.time) for f in container.decode(video=0)]
        rate = container.streams.video[0].average_rate
    if not decoded:
        raise InputError(f"{path}: not one frame of its video stream decodes")
    picked = frame_indices(len(decoded), n)
    times = [t for _, t in decoded]
    if None in times:  # frames without timestamps: timed by the stream's frame rate, if it has one
        times = [i / float(rate) for i in range(len(decoded))] if rate else None
    return [decoded[i][0] for i in picked], [times[i] - times[0] for i in picked] if times else None


# -----------------------------------------------------------------------------
# the frame cache


class FrameCache:
    """
    The N frames of each video as the model sees them, decoded once: resized to the pixel budget (model.Budget.fit) and
    stacked top to bottom into one JPEG (quality 95, no chroma subsampling), named by a hash of the video file's
    path, size and mtime, N and the budget. The JPEG's comment records when each frame is shown (`clip`).

    Why this size: the processor would resize a larger frame down to exactly this, so storing more serves no run at
    this budget (another budget gets its own entries). Why JPEG: kept raw, three 720p frames at the default budget
    are 1.8 MB a video (18 GB for Memento10k); as JPEG they are ~0.3-0.5 MB and read in a few ms, and the error
    JPEG adds (~1.5 grey levels, PSNR ~40 dB) is well under that of the lossy H.264 the clips come in.
    """

    def __init__(self, folder, n_frames=3, budget=None):
        self.folder, self.n_frames, self.budget = folder, n_frames, budget  # budget None: full resolution
        os.makedirs(folder, exist_ok=True)

    def path(self, video):
        try:
            st = os.stat(video.path)
        except FileNotFoundError:
            raise InputError(f"{video.path}: missing video file (video {video.video_id})")
        key = f"{os.path.abspath(video.path)}|{st.st_size}|{st.st_mtime_ns}|frames={self.n_frames}|{self.budget}"
        return os.path.join(self.folder, hashlib.sha1(key.encode()).hexdigest() + ".jpg")

    def get(self, video):
        """The video's frames as stored, (N, 3, H, W) uint8: channels first, as the processor takes them."""
        return self._frames(self._file(video))

    def clip(self, video):
        """(frames, seconds): `get`'s frames and when each is shown, in seconds from the video's first frame (None where
        the file tells no time), for the model's native video input. An entry stored before the cache recorded times
        is decoded again, once (same pixels; runs of images never need it)."""
        raw = self._file(video)
        meta = _metadata(raw.numpy().tobytes())
        if meta is None:
            self.put(video)
            raw = self._file(video)
            meta = _metadata(raw.numpy().tobytes())
        return self._frames(raw), meta["seconds"]

    def clips(self, videos, timed=False):
        """The frames of each of `videos` (`get`'s), and with `timed` (the native video input) when each is shown
        (`clip`'s), else None."""
        if timed:
            frames, seconds = map(list, zip(*(self.clip(v) for v in videos)))
            return frames, seconds
        return [self.get(v) for v in videos], None

    def _file(self, video):
        """The entry's JPEG file as a uint8 tensor, decoded and stored first if absent."""
        from torchvision.io import read_file

        path = self.path(video)
        if not os.path.exists(path):
            self.put(video)
        return read_file(path)

    def _frames(self, raw):
        from torchvision.io import ImageReadMode, decode_jpeg

        stacked = decode_jpeg(raw, mode=ImageReadMode.RGB)  # (3, N x H, W)
        return stacked.view(3, self.n_frames, -1, stacked.shape[-1]).transpose(0, 1)

    def put(self, video):
        """Decode `video`, fit its frames to the budget and store them; the JPEG's comment says when each is shown."""
        from PIL import Image

        frames, seconds = _decode(video.path, self.n_frames)
        frames = self.budget.fit(frames) if self.budget else torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2)
        n, _, height, width = frames.shape
        if n * height > 65500:  # JPEG's limit on a side
            raise InputError(f"{video.path}: {n} frames of {height} rows do not fit the cache; "
                             "lower --frames or --max-pixels")
        with atomic(self.path(video), "wb") as f:  # a killed run never leaves half a file under the real name
            stacked = frames.permute(0, 2, 3, 1).reshape(n * height, width, 3).numpy()
            Image.fromarray(stacked).save(f, format="JPEG", quality=95, subsampling=0,
                                          comment=json.dumps(dict(seconds=seconds)))

    def fill(self, videos, bad=None, workers=None, timed=False):
        """Decode every video not cached yet (with `timed`, also those stored before the cache recorded times: see
        `clip`), `workers` processes at a time (default: one a core), with a progress bar; later passes only read the
        cache. Returns the videos that decoded; one that does not raises InputError, or with a list as `bad` is
        described there and left out."""
        missing = [v for v in videos if not os.path.exists(self.path(v)) or timed and _metadata(self.path(v)) is None]
        if not missing:
            return videos
        failed, workers = set(), os.cpu_count() if workers is None else workers
        decoded = torch.utils.data.DataLoader(_Decode(self, missing), batch_size=None,
                                              num_workers=workers if len(missing) > 1 else 0, generator=torch.Generator())
        for v, message in zip(missing, tqdm(decoded, total=len(missing), desc="decoding frames", unit="video")):
            if message is None:
                continue
            if bad is None:
                raise InputError(message)
            problem(bad, v.path, message, v.video_id)
            failed.add(v.video_id)
        return [v for v in videos if v.video_id not in failed]


def _metadata(jpeg):
    """The JSON in a cache entry's JPEG comment (a path or the file's bytes); None when it has none. Reading it leaves
    the pixels undecoded."""
    from PIL import Image

    with Image.open(io.BytesIO(jpeg) if isinstance(jpeg, bytes) else jpeg) as image:
        comment = image.info.get("comment")
    return json.loads(comment) if comment else None


class _Decode(torch.utils.data.Dataset):
    """FrameCache.put of each video in a worker process; an item is None, or the problem that stopped it."""

    def __init__(self, cache, videos):
        self.cache, self.videos = cache, videos

    def __len__(self):
        return len(self.videos)

    def __getitem__(self, i):
        try:
            self.cache.put(self.videos[i])
        except InputError as e:
            return str(e)


# -----------------------------------------------------------------------------
# batches for the model, made off the training thread


class Batches(torch.utils.data.Dataset):
    """
    Micro-batches ready for the model. An item is a list of indices into `videos`; it comes back as prompt.encode's
    (inputs, labels) of their cached frames and captions, labels None unless `labelled`; with `video`, the frames of
    each go in as one native video input, with when each is shown. Through `loader`, the processor's work (patches,
    chat layout, tokens) runs in worker processes, ahead of the step that uses it.
    """

    def __init__(self, videos, cache, processor, labelled=True, video=False):
        self.videos, self.cache, self.processor, self.labelled, self.video = videos, cache, processor, labelled, video

    def __len__(self):
        return len(self.videos)

    def __getitem__(self, indices):
        chunk = [self.videos[i] for i in indices]
        frames, seconds = self.cache.clips(chunk, self.video)
        return prompt.encode(self.processor, frames, [v.captions for v in chunk],
                             [v.label for v in chunk] if self.labelled else None, seconds)


def loader(dataset, batches, workers):
    """The items of `dataset` for `batches` (lists of indices), in that order, made by `workers` processes (0: in
    this one) a few batches ahead, in pinned memory when a GPU will take them."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the workers are the parallelism; forked tokenizers warn
    return torch.utils.data.DataLoader(
        dataset, sampler=batches, batch_size=None, num_workers=workers, pin_memory=torch.cuda.is_available(),
        prefetch_factor=4 if workers else None,
        # Its own generator: the loader draws a seed at each pass, which must not move the global RNG (LoRA
        # dropout), or a resumed run would differ from an uninterrupted one.
        generator=torch.Generator())


def pixels(patches, processor, repeat=True):
    """
    The uint8 patches of `encode` -> the float32 pixel values the processor (its image or video processor) makes
    itself: its rescale and normalization, fused as it fuses them ((x - mean / r) / (std / r), r the rescale factor,
    per channel), then with `repeat` each still frame repeated over the vision tower's time steps (Qwen embeds
    tubelets of temporal_patch_size frames). A patch is laid out (channel, time, row, column).
    """
    mean = torch.tensor(processor.image_mean, device=patches.device) * (1.0 / processor.rescale_factor)
    std = torch.tensor(processor.image_std, device=patches.device) * (1.0 / processor.rescale_factor)
    x = patches.to(torch.float32).view(len(patches), len(mean), 1, -1)
    x = x.sub_(mean[:, None, None]).div_(std[:, None, None])
    return x.expand(-1, -1, processor.temporal_patch_size if repeat else 1, -1).reshape(len(patches), -1)


def to_model(batch, processor, device):
    """A batch of `encode` on the model's device, its patches normalized there; copies from pinned memory overlap."""
    batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    if "pixel_values" in batch and isinstance(processor.image_processor, ImageTransform):  # Qwen-VL-Chat's own
        batch["pixel_values"] = processor.image_processor.normalize(batch["pixel_values"])
    elif "pixel_values" in batch:
        batch["pixel_values"] = pixels(batch["pixel_values"], processor.image_processor)
    if "pixel_values_videos" in batch:  # a tubelet's time steps are two different frames already: nothing to repeat
        batch["pixel_values_videos"] = pixels(batch["pixel_values_videos"], processor.video_processor, repeat=False)
    return batch


def chunks(n, size):
    """range(n) as consecutive lists of `size` indices, the last one shorter."""
    return [list(range(i, min(i + size, n))) for i in range(0, n, size)]


def default_workers():
    """Loader and decoder processes: all cores but the training one's, at most 8."""
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def default_cache():
    return os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "memento-frames")

