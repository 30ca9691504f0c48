import unittest

from vae_pipeline.windows import create_windows, window_starts


class CreateWindowsTest(unittest.TestCase):
    def test_regular_windows_end_exactly_at_the_last_item(self):
        windows = create_windows(list(range(12)), window_size=8, stride=4)
        self.assertEqual(windows, [list(range(0, 8)), list(range(4, 12))])

    def test_last_window_is_moved_back_to_end_at_the_last_item(self):
        windows = create_windows(list(range(10)), window_size=8, stride=4)
        self.assertEqual(windows, [list(range(0, 8)), list(range(2, 10))])
        windows = create_windows(list(range(15)), window_size=4, stride=3)
        self.assertEqual([w[0] for w in windows], [0, 3, 6, 9, 11])

    def test_no_duplicate_window_when_the_regular_one_already_ends_at_the_tail(self):
        windows = create_windows(list(range(8)), window_size=8, stride=4)
        self.assertEqual(windows, [list(range(8))])
        windows = create_windows(list(range(16)), window_size=4, stride=4)
        self.assertEqual([w[0] for w in windows], [0, 4, 8, 12])

    def test_sequence_shorter_than_the_window_gives_one_window_of_everything(self):
        self.assertEqual(create_windows(["a", "b", "c"], window_size=8, stride=4), [["a", "b", "c"]])
        self.assertEqual(create_windows(["a"], window_size=1, stride=1), [["a"]])

    def test_no_items_no_windows(self):
        self.assertEqual(create_windows([], window_size=8, stride=4), [])

    def test_every_window_is_full_consecutive_and_everything_is_covered(self):
        for n in range(1, 40):
            for size in range(1, 11):
                for stride in range(1, size + 1):
                    items = list(range(n))
                    windows = create_windows(items, size, stride)
                    with self.subTest(n=n, size=size, stride=stride):
                        self.assertEqual(sorted({i for w in windows for i in w}), items)
                        self.assertEqual(windows[-1][-1], n - 1)
                        for w in windows:
                            self.assertEqual(len(w), min(size, n))
                            self.assertEqual(w, list(range(w[0], w[0] + len(w))))
                        starts = [w[0] for w in windows]
                        self.assertEqual(starts, sorted(set(starts)))
                        self.assertEqual(starts, window_starts(n, size, stride))
                        regular = starts[:-1]
                        self.assertEqual(regular, list(range(0, stride * len(regular), stride)))

    def test_windows_copy_items_in_order_from_any_sequence_type(self):
        self.assertEqual(create_windows("abcde", 3, 2), [["a", "b", "c"], ["c", "d", "e"]])
        self.assertEqual(create_windows(("x", "y", "z"), 2, 1), [["x", "y"], ["y", "z"]])

    def test_invalid_parameters_raise_value_error(self):
        for size, stride in [(0, 1), (4, 0), (-1, 1), (4, -2), (2.5, 1), (4, True)]:
            with self.subTest(size=size, stride=stride), self.assertRaises(ValueError):
                create_windows(list(range(10)), size, stride)

    def test_stride_larger_than_window_is_refused_because_frames_would_be_dropped(self):
        with self.assertRaisesRegex(ValueError, "no frame is dropped"):
            create_windows(list(range(20)), window_size=4, stride=5)


if __name__ == "__main__":
    unittest.main()
