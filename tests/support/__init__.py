"""Test support: the test images (build_test_images, build_debian_image) and the local registry
(local_registry) that tests/conftest.py serves them from. utils/demo.sh, .ci/run and the benchmarks in utils/
also run or import them; udocker itself never does."""
