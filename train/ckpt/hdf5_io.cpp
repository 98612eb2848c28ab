#include "train/ckpt/hdf5_io.h"

#include <fcntl.h>
#include <hdf5.h>
#include <libgen.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>

#include "train/ckpt/checkpoint_io.h"

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
  set_created_file_mode(fd);
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

struct H5RowWriter::Impl {
  std::string path, tmp;
  hid_t file = -1;
  struct Dataset {
    hid_t id = -1;
    int64_t width = 0;  // 0: i64 1-D
    int64_t rows = 0;
  };
  std::map<std::string, Dataset> sets;
  bool finished = false;

  void close_all() {
    for (auto& kv : sets)
      if (kv.second.id >= 0) H5Dclose(kv.second.id);
    sets.clear();
    if (file >= 0) H5Fclose(file);
    file = -1;
  }

  Dataset& get(const std::string& name, int64_t width) {
    auto it = sets.find(name);
    MT_CHECK(it != sets.end() && it->second.width == width, ErrorKind::Internal, "H5RowWriter: no ",
             width > 0 ? "f32" : "i64", " dataset '", name, "' in '", path, "'");
    return it->second;
  }

  void append(const std::string& name, const void* values, int64_t rows, int64_t width, hid_t type) {
    Dataset& d = get(name, width);
    if (rows == 0) return;
    const int rank = width > 0 ? 2 : 1;
    hsize_t size[2] = {static_cast<hsize_t>(d.rows + rows), static_cast<hsize_t>(width)};
    MT_H5_CHECK(H5Dset_extent(d.id, size), "growing '" + name + "' in " + path);
    hid_t space = H5Dget_space(d.id);
    hsize_t start[2] = {static_cast<hsize_t>(d.rows), 0},
            count[2] = {static_cast<hsize_t>(rows), static_cast<hsize_t>(width)};
    herr_t st = H5Sselect_hyperslab(space, H5S_SELECT_SET, start, nullptr, count, nullptr);
    hid_t mem = H5Screate_simple(rank, count, nullptr);
    if (st >= 0) st = H5Dwrite(d.id, type, mem, space, H5P_DEFAULT, values);
    H5Sclose(mem);
    H5Sclose(space);
    MT_CHECK(st >= 0, ErrorKind::Io, "HDF5 write of dataset '", name, "' to '", path, "' failed");
    d.rows += rows;
  }
};

H5RowWriter::H5RowWriter(const std::string& path) : impl_(new Impl) {
  hdf5_init();
  impl_->path = path;
  std::string tmpl = path + ".tmp.XXXXXX";
  int fd = ::mkstemp(tmpl.data());
  if (fd < 0) {
    const int err = errno;
    delete impl_;
    throw Error(ErrorKind::Io, str("cannot create a temporary file next to '", path, "': ", std::strerror(err)));
  }
  set_created_file_mode(fd);
  ::close(fd);
  impl_->tmp = tmpl;
  impl_->file = H5Fcreate(impl_->tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  if (impl_->file < 0) {
    ::unlink(impl_->tmp.c_str());
    delete impl_;
    throw Error(ErrorKind::Io, str("HDF5 cannot create '", tmpl, "'"));
  }
}

H5RowWriter::~H5RowWriter() {
  if (!impl_->finished) {
    impl_->close_all();
    ::unlink(impl_->tmp.c_str());
  }
  delete impl_;
}

void H5RowWriter::add_dataset(const std::string& name, int64_t width) {
  const int rank = width > 0 ? 2 : 1;
  hsize_t dims[2] = {0, static_cast<hsize_t>(width)}, maxdims[2] = {H5S_UNLIMITED, static_cast<hsize_t>(width)};
  // Chunks of about 256 KiB of rows.
  hsize_t chunk[2] = {static_cast<hsize_t>(std::max<int64_t>(1, 65536 / std::max<int64_t>(1, width))),
                      static_cast<hsize_t>(width)};
  hid_t space = H5Screate_simple(rank, dims, maxdims);
  hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
  H5Pset_chunk(dcpl, rank, chunk);
  hid_t ds = H5Dcreate2(impl_->file, name.c_str(), width > 0 ? H5T_NATIVE_FLOAT : H5T_NATIVE_INT64, space, H5P_DEFAULT,
                        dcpl, H5P_DEFAULT);
  H5Pclose(dcpl);
  H5Sclose(space);
  MT_CHECK(ds >= 0, ErrorKind::Io, "HDF5 cannot create dataset '", name, "' in '", impl_->path, "'");
  impl_->sets[name] = Impl::Dataset{ds, width, 0};
}

void H5RowWriter::append(const std::string& name, const float* values, int64_t rows) {
  const auto it = impl_->sets.find(name);
  const int64_t width = it == impl_->sets.end() ? -1 : it->second.width;
  impl_->append(name, values, rows, width > 0 ? width : -1, H5T_NATIVE_FLOAT);
}

void H5RowWriter::append(const std::string& name, const int64_t* values, int64_t rows) {
  impl_->append(name, values, rows, 0, H5T_NATIVE_INT64);
}

void H5RowWriter::finish() {
  Impl& m = *impl_;
  for (auto& kv : m.sets) {
    const herr_t st = H5Dclose(kv.second.id);
    kv.second.id = -1;
    MT_CHECK(st >= 0, ErrorKind::Io, "HDF5 cannot close dataset '", kv.first, "' of '", m.path, "'");
  }
  const herr_t st = H5Fclose(m.file);
  m.file = -1;
  MT_CHECK(st >= 0, ErrorKind::Io, "HDF5 cannot close '", m.tmp, "'");
  fsync_path(m.tmp, false);
  MT_CHECK(::rename(m.tmp.c_str(), m.path.c_str()) == 0, ErrorKind::Io, "cannot rename '", m.tmp, "' to '", m.path,
           "': ", std::strerror(errno));
  m.finished = true;
  fsync_path(dir_of(m.path), true);
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
