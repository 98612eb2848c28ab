#include "train/ids_file.h"

#include <sstream>
#include <vector>

#include "data/gz_reader.h"

namespace mt::train {

namespace {

struct IdLine {
  int64_t lineno;
  std::vector<int64_t> ids;
};

// Every line of the file with its ids (blank lines give an empty list). gzip or plain, like every data file.
std::vector<IdLine> read_id_lines(const std::string& path, int64_t vocab_size) {
  std::istringstream f(data::read_content(path, "ids file"));
  std::vector<IdLine> out;
  std::string line;
  int64_t lineno = 0;
  while (std::getline(f, line)) {
    ++lineno;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    IdLine row{lineno, {}};
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
      row.ids.push_back(id);
    }
    out.push_back(std::move(row));
  }
  MT_CHECK(!f.bad(), ErrorKind::Data, "error reading '", path, "'");
  return out;
}

}  // namespace

Tensor read_ids_file(const std::string& path, int64_t vocab_size) {
  std::vector<int64_t> ids;
  int64_t rows = 0, len = -1;
  for (const IdLine& l : read_id_lines(path, vocab_size)) {
    const int64_t count = static_cast<int64_t>(l.ids.size());
    if (count == 0) continue;
    MT_CHECK(len < 0 || count == len, ErrorKind::Data, path, ":", l.lineno, ": sequence has ", count,
             " ids but earlier lines have ", len, " (all sequences must have the same length)");
    len = count;
    ++rows;
    ids.insert(ids.end(), l.ids.begin(), l.ids.end());
  }
  MT_CHECK(rows > 0, ErrorKind::Data, "ids file '", path, "' contains no sequences");
  return Tensor::from_vector_i64(ids, {rows, len});
}

std::vector<std::vector<int64_t>> read_prompt_ids_file(const std::string& path, int64_t vocab_size) {
  std::vector<std::vector<int64_t>> prompts;
  for (IdLine& l : read_id_lines(path, vocab_size)) {
    MT_CHECK(!l.ids.empty(), ErrorKind::Data, path, ":", l.lineno,
             ": empty line (each line is one prompt of at least one token id)");
    prompts.push_back(std::move(l.ids));
  }
  MT_CHECK(!prompts.empty(), ErrorKind::Data, "prompt ids file '", path, "' contains no prompts");
  return prompts;
}

}  // namespace mt::train
