"""Model runtimes: one small interface and the engines that implement it."""
