/*
 * data_dump_driver.c — a stand-alone `guanaco data-dump` for tests/test_data.py
 * until the CLI registers the command. Built on the fly by the test:
 *   cc -Iinclude -Isrc tests/ref/data_dump_driver.c build/libguanaco.a \
 *      -lopenblas -lcjson -lpcre2-8 -lm -lpthread -fopenmp -o data_dump
 */
#include "train/data.h"  // gn_data_dump_main

int main(int argc, char **argv) { return gn_data_dump_main(argc, argv); }
