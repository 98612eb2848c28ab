#include "train/ids_file.h"

#include <sstream>
#include <vector>

#include "data/gz_reader.h"

namespace mt::train {

Tensor read_ids_file(const std::string& path, int64_t vocab_size) {
  std::istringstream f(data::read_content(path, "ids file"));  // gzip or plain, like every data file
  std::vector<int64_t> ids;
  int64_t rows = 0, len = -1;
  std::string line;
  int64_t lineno = 0;
  while (std::getline(f, line)) {
    ++lineno;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    int64_t count = 0;
    size_t i = 0;
    while (i < line.size()) {
      if (line[i] == ' ' || line[i] == '\t') {
        ++i;
        continue;
      }
      const size_t start = i;
      while (i < line.size() && line[i] != ' ' && line[i] != '\t') ++i;
      const std::string tok = line.substr(start, i - start);
      bool digits = tok.size() <= 18;
      for (char c : tok) digits = digits && c >= '0' && c <= '9';
      MT_CHECK(digits, ErrorKind::Data, path, ":", lineno, ":", start + 1, ": '", tok,
               "' is not a token id (expected a non-negative integer)");
      const int64_t id = std::stoll(tok);
      MT_CHECK(vocab_size <= 0 || id < vocab_size, ErrorKind::Data, path, ":", lineno, ":", start + 1, ": token id ",
               id, " is outside the model's vocabulary [0, ", vocab_size, ")");
      ids.push_back(id);
      ++count;
    }
    if (count == 0) continue;
    MT_CHECK(len < 0 || count == len, ErrorKind::Data, path, ":", lineno, ": sequence has ", count,
             " ids but earlier lines have ", len, " (all sequences must have the same length)");
    len = count;
    ++rows;
  }
  MT_CHECK(!f.bad(), ErrorKind::Data, "error reading '", path, "'");
  MT_CHECK(rows > 0, ErrorKind::Data, "ids file '", path, "' contains no sequences");
  return Tensor::from_vector_i64(ids, {rows, len});
}

}  // namespace mt::train
