#include "train/ckpt/hdf5_io.h"

#include <fcntl.h>
#include <hdf5.h>
#include <libgen.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace mt::train {

namespace {

void hdf5_init() {
  static const bool done = [] {
    H5dont_atexit();
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);  // errors come back as status codes; we report them
    return true;
  }();
  (void)done;
}

#define MT_H5_CHECK(expr, what)                                                              \
  do {                                                                                       \
    if ((expr) < 0) throw Error(ErrorKind::Io, str("HDF5 error: ", what, " (", #expr, ")")); \
  } while (0)

void fsync_path(const std::string& path, bool directory) {
  int fd = ::open(path.c_str(), directory ? (O_RDONLY | O_DIRECTORY) : O_RDONLY);
  MT_CHECK(fd >= 0, ErrorKind::Io, "cannot open '", path, "' to fsync: ", std::strerror(errno));
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  MT_CHECK(rc == 0, ErrorKind::Io, "fsync of '", path, "' failed: ", std::strerror(err));
}

std::string dir_of(const std::string& path) {
  std::string copy = path;
  return ::dirname(copy.data());
}

}  // namespace

void write_h5(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& datasets) {
  hdf5_init();
  std::string tmpl = path + ".tmp.XXXXXX";
  int fd = ::mkstemp(tmpl.data());
  MT_CHECK(fd >= 0, ErrorKind::Io, "cannot create a temporary file next to '", path, "': ", std::strerror(errno));
  ::close(fd);
  const std::string tmp = tmpl;
  try {
    hid_t file = H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    MT_CHECK(file >= 0, ErrorKind::Io, "HDF5 cannot create '", tmp, "'");
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    H5Pset_create_intermediate_group(lcpl, 1);
    for (auto& kv : datasets) {
      Tensor t = kv.second.to(Device::cpu()).contiguous();
      if (is_half(t.dtype())) t = t.to(DType::F32);
      hid_t type = H5T_NATIVE_FLOAT;
      switch (t.dtype()) {
        case DType::F64: type = H5T_NATIVE_DOUBLE; break;
        case DType::I32: type = H5T_NATIVE_INT32; break;
        case DType::I64: type = H5T_NATIVE_INT64; break;
        default: break;
      }
      std::vector<hsize_t> dims(t.shape().begin(), t.shape().end());
      hid_t space =
          t.dim() == 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr);
      hid_t ds = H5Dcreate2(file, kv.first.c_str(), type, space, lcpl, H5P_DEFAULT, H5P_DEFAULT);
      MT_CHECK(ds >= 0, ErrorKind::Io, "HDF5 cannot create dataset '", kv.first, "' in '", path, "'");
      herr_t st = t.numel() ? H5Dwrite(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, t.data_ptr()) : 0;
      H5Dclose(ds);
      H5Sclose(space);
      MT_CHECK(st >= 0, ErrorKind::Io, "HDF5 write of dataset '", kv.first, "' to '", path, "' failed");
    }
    H5Pclose(lcpl);
    MT_H5_CHECK(H5Fclose(file), "closing " + tmp);
    fsync_path(tmp, false);
    MT_CHECK(::rename(tmp.c_str(), path.c_str()) == 0, ErrorKind::Io, "cannot rename '", tmp, "' to '", path,
             "': ", std::strerror(errno));
    fsync_path(dir_of(path), true);
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
}

std::vector<double> read_h5_dataset(const std::string& path, const std::string& name, Shape* shape) {
  hdf5_init();
  hid_t file = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  MT_CHECK(file >= 0, ErrorKind::Io, "HDF5 cannot open '", path, "'");
  hid_t ds = H5Dopen2(file, name.c_str(), H5P_DEFAULT);
  if (ds < 0) {
    H5Fclose(file);
    throw Error(ErrorKind::Io, str("'", path, "' has no dataset '", name, "'"));
  }
  hid_t space = H5Dget_space(ds);
  int nd = H5Sget_simple_extent_ndims(space);
  std::vector<hsize_t> dims(nd > 0 ? nd : 0);
  if (nd > 0) H5Sget_simple_extent_dims(space, dims.data(), nullptr);
  size_t n = 1;
  for (auto d : dims) n *= d;
  if (shape) shape->assign(dims.begin(), dims.end());
  std::vector<double> out(n);
  herr_t st = H5Dread(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, out.data());
  H5Sclose(space);
  H5Dclose(ds);
  H5Fclose(file);
  MT_CHECK(st >= 0, ErrorKind::Io, "HDF5 read of '", name, "' from '", path, "' failed");
  return out;
}

}  // namespace mt::train
