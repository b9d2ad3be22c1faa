build-eval-asan/src/core/plot.o: src/core/plot.c src/core/plot.h \
 include/guanaco.h src/core/common.h /usr/include/cairo/cairo.h \
 /usr/include/cairo/cairo-version.h /usr/include/cairo/cairo-features.h \
 /usr/include/cairo/cairo-deprecated.h
src/core/plot.h:
include/guanaco.h:
src/core/common.h:
/usr/include/cairo/cairo.h:
/usr/include/cairo/cairo-version.h:
/usr/include/cairo/cairo-features.h:
/usr/include/cairo/cairo-deprecated.h:
