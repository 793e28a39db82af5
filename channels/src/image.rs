//! Reading files from inside squashfs and erofs images.
