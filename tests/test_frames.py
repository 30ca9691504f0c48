import os
import tempfile
import threading
import unittest
from pathlib import Path

# The corrupt-video tests make FFmpeg print decoder errors; they are expected, so keep the test log readable.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from vae_pipeline.frames import (  # noqa: E402
    Frame,
    FrameError,
    FrameSource,
    InputError,
    Sequence,
    VideoLength,
    count_video_frames,
    discover_inputs,
    decode_image,
    discover_sequences,
    image_size,
    model_input_size,
    natural_key,
    needs_normalized_copy,
    prepare_frame,
    sequence_frame_sizes,
    stack_frames,
    conform_frames,
)
from vae_pipeline.windows import create_windows  # noqa: E402

VIDEO_SIZE = (64, 48)


def video_frame_content(index: int) -> np.ndarray:
    """RGB frame whose value encodes its index, so a decoded frame says which one it is."""
    frame = np.zeros((VIDEO_SIZE[1], VIDEO_SIZE[0], 3), np.uint8)
    frame[..., 0] = (index * 7) % 256
    frame[..., 1] = 255 - (index * 7) % 256
    frame[:, : 4 + index % 50, 2] = 200
    return frame


def write_video(path: Path, num_frames: int, fourcc: str = "mp4v") -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10, VIDEO_SIZE)
    if not writer.isOpened():
        raise unittest.SkipTest(f"this OpenCV cannot write {fourcc} into {path.suffix}")
    for index in range(num_frames):
        writer.write(cv2.cvtColor(video_frame_content(index), cv2.COLOR_RGB2BGR))
    writer.release()


def write_image(path: Path, size: tuple[int, int] = (8, 6), value: int = 100) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, value, value)).save(path)


class TempDirTest(unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory()
        self.root = Path(self._tmp.name)

    def tearDown(self):
        self._tmp.cleanup()


class NaturalKeyTest(unittest.TestCase):
    def test_numbers_compare_as_numbers_and_case_is_ignored(self):
        names = ["frame10.png", "Frame2.png", "frame1.png", "frame02.png", "a.png", "B.png"]
        self.assertEqual(
            sorted(names, key=natural_key),
            ["a.png", "B.png", "frame1.png", "Frame2.png", "frame02.png", "frame10.png"],
        )

    def test_ties_are_broken_deterministically(self):
        names = ["img1.png", "IMG1.png", "img01.png"]
        self.assertEqual(sorted(names, key=natural_key), sorted(reversed(names), key=natural_key))


class DiscoverImagesTest(TempDirTest):
    def test_folder_of_images_is_one_sequence_in_natural_order(self):
        for name in ["frame10.png", "frame2.JPG", "frame1.Png", "frame3.jpeg", "frame4.bmp", "frame5.TIF",
                     "frame6.tiff", "frame7.webp", ".hidden.png"]:
            write_image(self.root / name)
        (self.root / "notes.txt").write_text("not a frame")
        (sequence,) = discover_sequences(self.root)
        self.assertEqual(sequence.name, ".")
        self.assertFalse(sequence.is_video)
        self.assertEqual(sequence.source, self.root)
        self.assertEqual(
            [frame.name for frame in sequence.frames],
            ["frame1.Png", "frame2.JPG", "frame3.jpeg", "frame4.bmp", "frame5.TIF", "frame6.tiff", "frame7.webp",
             "frame10.png"],
        )
        self.assertTrue(all(frame.video_index is None for frame in sequence.frames))
        self.assertEqual(sequence.frames[0].path, self.root / "frame1.Png")

    def test_nested_folders_give_one_sequence_each_named_by_relative_path(self):
        write_image(self.root / "top.png")
        write_image(self.root / "scene_b" / "0.png")
        write_image(self.root / "scene_a" / "x" / "1.png")
        write_image(self.root / "scene_a" / "2.png")
        write_image(self.root / "scene_a" / "x" / "deeper" / "3.png")
        write_image(self.root / ".cache" / "4.png")
        (self.root / "empty").mkdir()
        sequences = discover_sequences(self.root)
        self.assertEqual([s.name for s in sequences], [".", "scene_a", "scene_a/x", "scene_a/x/deeper", "scene_b"])
        self.assertEqual([[f.name for f in s.frames] for s in sequences], [["top.png"], ["2.png"], ["1.png"],
                                                                           ["3.png"], ["0.png"]])

    def test_symlink_loops_are_visited_once(self):
        write_image(self.root / "scene" / "0.png")
        (self.root / "scene" / "loop").symlink_to(self.root, target_is_directory=True)
        self.assertEqual([s.name for s in discover_sequences(self.root)], ["scene"])

    def test_frame_step_keeps_every_nth_frame_from_the_first(self):
        for index in range(10):
            write_image(self.root / f"f{index}.png")
        (sequence,) = discover_sequences(self.root, frame_step=3)
        self.assertEqual([f.name for f in sequence.frames], ["f0.png", "f3.png", "f6.png", "f9.png"])

    def test_input_errors_are_one_line_and_say_what_is_wrong(self):
        with self.assertRaisesRegex(InputError, "does not exist"):
            discover_sequences(self.root / "missing")
        write_image(self.root / "a.png")
        with self.assertRaisesRegex(InputError, "not a folder"):
            discover_sequences(self.root / "a.png")
        (self.root / "empty").mkdir()
        (self.root / "empty" / "readme.txt").write_text("no frames here")
        with self.assertRaises(InputError) as caught:
            discover_sequences(self.root / "empty")
        self.assertIn("no frames found", str(caught.exception))
        self.assertIn(".png", str(caught.exception))
        self.assertIn(".mp4", str(caught.exception))
        self.assertNotIn("\n", str(caught.exception))
        for step in (0, -1, 1.5):
            with self.subTest(step=step), self.assertRaises(InputError):
                discover_sequences(self.root, frame_step=step)

    def test_input_error_is_a_value_error(self):
        self.assertTrue(issubclass(InputError, ValueError))
        self.assertTrue(issubclass(FrameError, InputError))


class DiscoverVideosTest(TempDirTest):
    def test_each_container_is_a_sequence_named_without_suffix(self):
        write_video(self.root / "clip_a.mp4", 5)
        write_video(self.root / "clip_b.MOV", 4)
        (self.root / "sub").mkdir()
        write_video(self.root / "sub" / "clip_c.mkv", 3)
        write_video(self.root / "sub" / "clip_d.avi", 6, fourcc="FFV1")
        write_image(self.root / "sub" / "still.png")
        sequences = discover_sequences(self.root)
        self.assertEqual([s.name for s in sequences], ["clip_a", "clip_b", "sub", "sub/clip_c", "sub/clip_d"])
        lengths = {s.name: len(s.frames) for s in sequences}
        self.assertEqual(lengths, {"clip_a": 5, "clip_b": 4, "sub": 1, "sub/clip_c": 3, "sub/clip_d": 6})
        clip_a = sequences[0]
        self.assertTrue(clip_a.is_video)
        self.assertEqual(clip_a.source, self.root / "clip_a.mp4")
        self.assertEqual(clip_a.frames[3], Frame("frame_000003.png", self.root / "clip_a.mp4", 3))

    def test_frame_step_on_video_keeps_original_frame_numbers(self):
        write_video(self.root / "clip.avi", 11, fourcc="FFV1")
        (sequence,) = discover_sequences(self.root, frame_step=4)
        self.assertEqual([f.video_index for f in sequence.frames], [0, 4, 8])
        self.assertEqual([f.name for f in sequence.frames], ["frame_000000.png", "frame_000004.png",
                                                             "frame_000008.png"])

    def test_unreadable_video_is_named_in_the_error(self):
        (self.root / "broken.mp4").write_bytes(b"this is not a video" * 10)
        with self.assertRaisesRegex(InputError, "broken.mp4"):
            discover_sequences(self.root)

    def test_two_inputs_with_the_same_sequence_name_are_refused(self):
        write_video(self.root / "clip.mp4", 2)
        write_image(self.root / "clip" / "0.png")
        with self.assertRaisesRegex(InputError, "same output name 'clip'"):
            discover_sequences(self.root)

    def test_wrong_container_frame_count_is_replaced_by_decoding(self):
        path = self.root / "truncated.avi"
        write_video(path, 20, fourcc="MJPG")
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * 0.6)])
        capture = cv2.VideoCapture(str(path))
        reported = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        decodable = 0
        while capture.read()[0]:
            decodable += 1
        capture.release()
        if reported == decodable:
            self.skipTest("this FFmpeg reports the truncated file's frame count correctly")
        self.assertEqual(count_video_frames(path), VideoLength(decodable, reported))
        self.assertTrue(count_video_frames(path).truncated)
        self.assertEqual(count_video_frames(self._full_video()), VideoLength(7, 7))
        found = discover_inputs(self.root)
        (notice,) = found.notices
        self.assertIn(f"announces {reported} frames but only {decodable} decode", notice.message)
        self.assertEqual(notice.path, path)

    def test_a_broken_link_among_frames_is_left_out_with_a_notice(self):
        for index in range(3):
            write_image(self.root / f"{index}.png")
        (self.root / "1.png").unlink()
        (self.root / "1.png").symlink_to(self.root / "gone" / "1.png")
        found = discover_inputs(self.root)
        self.assertEqual([f.name for f in found.sequences[0].frames], ["0.png", "2.png"])
        (notice,) = found.notices
        self.assertEqual(notice.path, self.root / "1.png")
        self.assertIn("which does not exist", notice.message)

    def _full_video(self) -> Path:
        path = self.root / "full.mp4"
        write_video(path, 7)
        return path


class DecodeImageTest(TempDirTest):
    def test_rgb_round_trip_for_lossless_formats(self):
        rgb = np.random.default_rng(0).integers(0, 256, (6, 9, 3), dtype=np.uint8)
        for suffix in (".png", ".BMP", ".tif", ".webp"):
            path = self.root / f"image{suffix}"
            Image.fromarray(rgb).save(path, **({"lossless": True} if suffix == ".webp" else {}))
            with self.subTest(suffix=suffix):
                decoded = decode_image(path)
                self.assertEqual(decoded.dtype, np.uint8)
                np.testing.assert_array_equal(decoded, rgb)

    def test_exif_orientation_is_applied(self):
        rgb = np.random.default_rng(1).integers(0, 256, (20, 40, 3), dtype=np.uint8)
        image = Image.fromarray(rgb)
        exif = image.getexif()
        exif[0x0112] = 6  # stored pixels must be rotated 90 degrees clockwise for display
        path = self.root / "rotated.png"
        image.save(path, exif=exif)
        decoded = decode_image(path)
        np.testing.assert_array_equal(decoded, np.rot90(rgb, k=-1))
        self.assertEqual(image_size(path), (20, 40))
        self.assertTrue(needs_normalized_copy(path))

    def test_grey_becomes_rgb(self):
        grey = np.arange(30, dtype=np.uint8).reshape(5, 6) * 8
        path = self.root / "grey.png"
        Image.fromarray(grey, "L").save(path)
        np.testing.assert_array_equal(decode_image(path), np.repeat(grey[:, :, None], 3, axis=2))
        self.assertFalse(needs_normalized_copy(path))

    def test_transparency_is_composited_over_white(self):
        rgba = np.zeros((1, 3, 4), np.uint8)
        rgba[0, :, :3] = (0, 100, 200)
        rgba[0, :, 3] = (0, 255, 128)
        path = self.root / "rgba.png"
        Image.fromarray(rgba, "RGBA").save(path)
        decoded = decode_image(path).astype(int)
        np.testing.assert_array_equal(decoded[0, 0], (255, 255, 255))
        np.testing.assert_array_equal(decoded[0, 1], (0, 100, 200))
        expected = np.round(np.array([0, 100, 200]) * 128 / 255 + 255 * 127 / 255)
        self.assertLessEqual(np.abs(decoded[0, 2] - expected).max(), 1)
        self.assertTrue(needs_normalized_copy(path))

        la = Image.fromarray(np.array([[[10, 0], [10, 255]]], np.uint8), "LA")
        la.save(self.root / "la.png")
        np.testing.assert_array_equal(decode_image(self.root / "la.png")[0], [[255] * 3, [10] * 3])

        palette = Image.new("P", (2, 1))
        palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
        palette.putpixel((0, 0), 0)
        palette.putpixel((1, 0), 1)
        palette.save(self.root / "palette.png", transparency=0)
        np.testing.assert_array_equal(decode_image(self.root / "palette.png")[0], [[255, 255, 255], [0, 0, 255]])

    def test_sixteen_bit_is_scaled_not_clipped(self):
        values = np.array([[0, 257, 32896, 65535, 1000, 65000]], np.uint16)
        expected = np.round(values / 257).astype(np.uint8)
        for suffix in (".png", ".tif"):
            path = self.root / f"deep{suffix}"
            cv2.imwrite(str(path), values)
            with self.subTest(suffix=suffix):
                with Image.open(path) as image:
                    self.assertTrue(image.mode.startswith("I;16"))
                np.testing.assert_array_equal(decode_image(path)[..., 0], expected)
                np.testing.assert_array_equal(decode_image(path)[..., 2], expected)
        colour = np.stack([values, values[:, ::-1], np.full_like(values, 65535)], axis=-1)
        cv2.imwrite(str(self.root / "deep_rgb.png"), colour[..., ::-1])
        decoded = decode_image(self.root / "deep_rgb.png").astype(int)
        self.assertLessEqual(np.abs(decoded - np.round(colour / 257)).max(), 1)

    def test_cmyk_becomes_rgb(self):
        path = self.root / "cmyk.tif"
        cmyk = Image.new("CMYK", (2, 1))
        cmyk.putpixel((0, 0), (0, 0, 0, 0))
        cmyk.putpixel((1, 0), (0, 255, 255, 0))
        cmyk.save(path)
        np.testing.assert_array_equal(decode_image(path)[0], [[255, 255, 255], [255, 0, 0]])

    def test_corrupt_truncated_and_missing_files_raise_frame_error_naming_the_file(self):
        rgb = np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(self.root / "whole.jpg", quality=95)
        data = (self.root / "whole.jpg").read_bytes()
        (self.root / "truncated.jpg").write_bytes(data[: len(data) // 2])
        Image.fromarray(rgb).save(self.root / "whole.png")
        data = (self.root / "whole.png").read_bytes()
        (self.root / "truncated.png").write_bytes(data[: len(data) // 2])
        (self.root / "garbage.png").write_bytes(b"\x89PNG not really")
        for name in ("truncated.jpg", "truncated.png", "garbage.png", "missing.png"):
            with self.subTest(name=name), self.assertRaises(FrameError) as caught:
                decode_image(self.root / name)
            self.assertIn(name, str(caught.exception))


class FrameSourceImagesTest(TempDirTest):
    def setUp(self):
        super().setUp()
        for index in range(12):
            write_image(self.root / f"f{index:02d}.png", value=index * 10)
        (self.sequence,) = discover_sequences(self.root)
        self.decodes: dict[int, int] = {}
        self.count_lock = threading.Lock()

    def counting_prepare(self, frame: Frame, image: np.ndarray) -> int:
        index = int(frame.name[1:3])
        with self.count_lock:
            self.decodes[index] = self.decodes.get(index, 0) + 1
        return int(image[0, 0, 0])

    def test_overlapping_windows_decode_each_frame_once_and_memory_stays_flat(self):
        windows = create_windows(list(range(12)), window_size=4, stride=2)
        largest_cache = 0
        with FrameSource(self.sequence, self.counting_prepare) as source:
            for number, window in enumerate(windows):
                self.assertEqual([source.get(i) for i in window], [i * 10 for i in window])
                largest_cache = max(largest_cache, len(source.cached_indices))
                if number + 1 < len(windows):
                    source.release_before(windows[number + 1][0])
        self.assertEqual(self.decodes, {i: 1 for i in range(12)})
        self.assertLessEqual(largest_cache, 4)

    def test_without_prepare_returns_the_decoded_rgb_frame(self):
        with FrameSource(self.sequence) as source:
            frame = source.get(3)
        self.assertEqual(frame.shape, (6, 8, 3))
        self.assertTrue((frame == 30).all())

    def test_concurrent_requests_decode_once(self):
        source = FrameSource(self.sequence, self.counting_prepare)
        results: list[list[int]] = []

        def load_all():
            results.append([source.get(i) for i in range(12)])

        threads = [threading.Thread(target=load_all) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.assertEqual(results, [[i * 10 for i in range(12)]] * 4)
        self.assertEqual(self.decodes, {i: 1 for i in range(12)})

    def test_released_frame_is_decoded_again_and_range_is_checked(self):
        source = FrameSource(self.sequence, self.counting_prepare)
        source.get(0)
        source.release_before(1)
        self.assertEqual(source.cached_indices, [])
        self.assertEqual(source.get(0), 0)
        self.assertEqual(self.decodes[0], 2)
        with self.assertRaises(IndexError):
            source.get(12)

    def test_frame_sizes_come_from_headers(self):
        self.assertEqual(sequence_frame_sizes(self.sequence), [(8, 6)] * 12)


class FrameSourceVideoTest(TempDirTest):
    def setUp(self):
        super().setUp()
        self.path = self.root / "clip.avi"
        write_video(self.path, 23, fourcc="FFV1")  # lossless, so decoded frames can be compared exactly

    def test_frames_match_sequential_decoding_with_frame_step(self):
        (sequence,) = discover_sequences(self.root, frame_step=3)
        self.assertEqual(len(sequence), 8)
        with FrameSource(sequence) as source:
            for index, frame in enumerate(sequence.frames):
                np.testing.assert_array_equal(source.get(index), video_frame_content(frame.video_index))
        self.assertEqual(sequence_frame_sizes(sequence), [VIDEO_SIZE] * 8)

    def test_windows_in_order_decode_each_frame_once_with_flat_memory(self):
        (sequence,) = discover_sequences(self.root, frame_step=2)
        prepared: list[int] = []
        largest_cache = 0

        def prepare(frame: Frame, image: np.ndarray) -> int:
            prepared.append(frame.video_index)
            return frame.video_index

        windows = create_windows(list(range(len(sequence))), window_size=5, stride=3)
        with FrameSource(sequence, prepare) as source:
            for number, window in enumerate(windows):
                self.assertEqual([source.get(i) for i in window], [2 * i for i in window])
                largest_cache = max(largest_cache, len(source.cached_indices))
                if number + 1 < len(windows):
                    source.release_before(windows[number + 1][0])
        self.assertEqual(prepared, list(range(0, 23, 2)))
        self.assertLessEqual(largest_cache, 5)

    def test_jumping_ahead_caches_the_frames_passed_and_going_back_restarts(self):
        (sequence,) = discover_sequences(self.root)
        with FrameSource(sequence) as source:
            np.testing.assert_array_equal(source.get(10), video_frame_content(10))
            self.assertEqual(source.cached_indices, list(range(11)))
            source.release_before(11)
            np.testing.assert_array_equal(source.get(4), video_frame_content(4))
            np.testing.assert_array_equal(source.get(22), video_frame_content(22))

    def test_video_shorter_than_its_sequence_raises_frame_error(self):
        frames = [Frame(f"frame_{i:06d}.png", self.path, i) for i in range(25)]
        sequence = Sequence("clip", self.path, frames, is_video=True)
        with FrameSource(sequence) as source:
            source.get(22)
            with self.assertRaisesRegex(FrameError, "frame 23 of video .*clip.avi"):
                source.get(24)


def bright_dot(size: tuple[int, int], centre: tuple[float, float], sigma: float) -> np.ndarray:
    """RGB frame with a Gaussian dot; ``centre`` in pixel-centre convention (first pixel centred at 0.5)."""
    width, height = size
    x = np.arange(width) + 0.5
    y = np.arange(height) + 0.5
    dot = np.exp(-((x[None, :] - centre[0]) ** 2 + (y[:, None] - centre[1]) ** 2) / (2 * sigma**2))
    return np.repeat(np.round(dot * 255).astype(np.uint8)[:, :, None], 3, axis=2)


def centroid(image_u8: np.ndarray) -> tuple[float, float]:
    weight = image_u8[..., 0].astype(np.float64)
    weight[weight < 0.2 * weight.max()] = 0
    height, width = weight.shape
    x = np.arange(width) + 0.5
    y = np.arange(height) + 0.5
    return float((weight.sum(0) * x).sum() / weight.sum()), float((weight.sum(1) * y).sum() / weight.sum())


class PreprocessTest(unittest.TestCase):
    def test_aspect_sizes_follow_the_long_side_and_multiples_of_14(self):
        self.assertEqual(model_input_size((1920, 1080)), (518, 294))
        self.assertEqual(model_input_size((1080, 1920)), (294, 518))
        self.assertEqual(model_input_size((640, 480)), (518, 392))
        self.assertEqual(model_input_size((500, 500)), (518, 518))
        self.assertEqual(model_input_size((2000, 10)), (518, 14))
        self.assertEqual(model_input_size((1920, 1080), "square"), (518, 518))
        self.assertEqual(model_input_size((300, 200), target_size=140), (140, 98))
        with self.assertRaises(ValueError):
            model_input_size((10, 10), "crop")
        with self.assertRaises(ValueError):
            model_input_size((10, 10), target_size=500)

    def test_aspect_mode_output(self):
        image = np.random.default_rng(3).integers(0, 256, (120, 200, 3), dtype=np.uint8)
        prepared = prepare_frame(image, "aspect")
        self.assertEqual(prepared.model_size, (518, 308))
        self.assertEqual(prepared.tensor.shape, (3, 308, 518))
        self.assertEqual(prepared.tensor.dtype, torch.float32)
        self.assertEqual(prepared.image_u8.shape, (308, 518, 3))
        self.assertEqual(prepared.image_u8.dtype, np.uint8)
        self.assertEqual(prepared.original_size, (200, 120))
        self.assertEqual(prepared.model_to_original, (200 / 518, 120 / 308, 0.0, 0.0))
        expected = torch.from_numpy(prepared.image_u8).permute(2, 0, 1).float() / 255.0
        self.assertTrue(torch.equal(prepared.tensor, expected))

    def test_square_mode_output_follows_the_official_demo(self):
        image = np.full((100, 300, 3), 200, np.uint8)
        prepared = prepare_frame(image, "square")
        self.assertEqual(prepared.model_size, (518, 518))
        self.assertEqual(prepared.original_size, (300, 100))
        self.assertEqual(prepared.model_to_original, (300 / 518, 300 / 518, 0.0, -100.0))
        tensor = prepared.tensor
        self.assertTrue(torch.all(tensor[:, :160] == 0))  # black padding above the content
        self.assertTrue(torch.all(tensor[:, 358:] == 0))  # and below
        self.assertTrue(torch.allclose(tensor[:, 180:340], torch.tensor(200 / 255)))
        # Colours are the truncated float image, as the official export writes them.
        np.testing.assert_array_equal(
            prepared.image_u8, (tensor * 255).to(torch.uint8).permute(1, 2, 0).numpy()
        )
        edge = tensor[0, 165:180, 100]  # the content's top edge is at 100 / 300 * 518 = 172.7
        self.assertTrue(((edge > 0) & (edge < 200 / 255 - 1e-6)).any(), "bilinear+bicubic leave a soft edge")

    def test_model_pixels_map_back_to_original_pixels(self):
        cases = [
            ((333, 187), (101.3, 60.7), 6.0),   # downscale, landscape
            ((187, 333), (40.2, 250.9), 6.0),   # downscale, portrait (padding left and right in square mode)
            ((90, 50), (30.5, 19.25), 2.5),     # upscale
            ((1200, 700), (903.0, 111.0), 18.0),
        ]
        for mode in ("aspect", "square"):
            for size, centre, sigma in cases:
                prepared = prepare_frame(bright_dot(size, centre, sigma), mode)
                sx, sy, ox, oy = prepared.model_to_original
                x_model, y_model = centroid(prepared.image_u8)
                with self.subTest(mode=mode, size=size):
                    self.assertLess(abs(sx * x_model + ox - centre[0]), 0.5 * sx)
                    self.assertLess(abs(sy * y_model + oy - centre[1]), 0.5 * sy)
                    # and tighter than that in fact: a systematic half-pixel error would show here
                    self.assertLess(abs(sx * x_model + ox - centre[0]), 0.1 * sx)
                    self.assertLess(abs(sy * y_model + oy - centre[1]), 0.1 * sy)

    def test_invalid_input(self):
        with self.assertRaises(ValueError):
            prepare_frame(np.zeros((10, 10), np.uint8))
        with self.assertRaises(ValueError):
            prepare_frame(np.zeros((10, 10, 3), np.float32))
        with self.assertRaises(ValueError):
            prepare_frame(np.zeros((10, 10, 3), np.uint8), "crop")

    def test_tiny_frames_are_refused(self):
        with self.assertRaisesRegex(ValueError, "1x1 pixels, too small"):
            prepare_frame(np.zeros((1, 1, 3), np.uint8))

    def test_a_frame_of_another_orientation_is_fitted_with_an_exact_mapping(self):
        # Two landscape frames and one portrait frame with a bright dot: the portrait one is fitted into the
        # landscape model size, and its mapping still sends the dot back to where it is in its own pixels.
        landscape = [prepare_frame(np.full((60, 100, 3), 90, np.uint8), target_size=140) for _ in range(2)]
        centre = (31.0, 62.0)
        portrait = prepare_frame(bright_dot((80, 120), centre, 3.0), target_size=140)
        frames = conform_frames([landscape[0], portrait, landscape[1]])
        self.assertEqual({frame.model_size for frame in frames}, {landscape[0].model_size})
        self.assertIs(frames[0], landscape[0])
        fitted = frames[1]
        self.assertEqual(fitted.original_size, (80, 120))
        sx, sy, ox, oy = fitted.model_to_original
        x_model, y_model = centroid(fitted.image_u8)
        self.assertLess(abs(sx * x_model + ox - centre[0]), 0.15 * sx)
        self.assertLess(abs(sy * y_model + oy - centre[1]), 0.15 * sy)
        self.assertTrue(torch.equal(fitted.tensor, torch.from_numpy(fitted.image_u8).permute(2, 0, 1) / 255.0))
        self.assertEqual(stack_frames(frames).shape[0], 3)

    def test_stack_frames(self):
        frames = [prepare_frame(np.full((60, 100, 3), v, np.uint8), target_size=140) for v in (0, 128, 255)]
        stacked = stack_frames(frames)
        self.assertEqual(stacked.shape, (3, 3, 84, 140))
        self.assertTrue(torch.equal(stacked[1], frames[1].tensor))
        other = prepare_frame(np.zeros((100, 100, 3), np.uint8), target_size=140)
        with self.assertRaisesRegex(ValueError, "frame 3 is 140x140"):
            stack_frames(frames + [other])
        with self.assertRaises(ValueError):
            stack_frames([])


if __name__ == "__main__":
    unittest.main()
