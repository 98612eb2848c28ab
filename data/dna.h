// DNA character tokenizer (Caduceus / HyenaDNA style): one token per base.
//
//   id 0 [PAD]   id 1 [EOD] (end of a document / record)   id 2 A   id 3 C   id 4 G   id 5 T   id 6 N
//   vocabulary 7 (models pad it to 8).
// Case-insensitive: lowercase (soft-masked repeats in genome FASTA) reads as uppercase. The IUPAC ambiguity codes
// R Y S W K M B D H V stand for a choice of bases, so they read as N (unknown base); '-' and '.' (alignment gaps)
// and every other character, U (RNA) included, are not DNA: encode_dna reports the first one with its position.
// Reverse complement maps A<->T, C<->G and keeps N, reversing the order; special tokens keep their place.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace mt::data {

constexpr int32_t kDnaPad = 0, kDnaEod = 1, kDnaA = 2, kDnaC = 3, kDnaG = 4, kDnaT = 5, kDnaN = 6;
constexpr int64_t kDnaVocab = 7;

// Token of one character, or -1 when it is not a DNA letter.
int32_t dna_token(char c);
// The letter of a base token (A C G T N), or 0 for the special tokens and ids outside the vocabulary.
char dna_letter(int64_t id);

// Appends the tokens of `seq` to `out`. Returns -1 when every character is DNA, else the offset of the first that
// is not (then `out` is unchanged).
int64_t encode_dna(const std::string& seq, std::vector<int32_t>& out);

// Streams a FASTA file (gzip-compressed or not, data/gz_reader.h) as DNA tokens: on_tokens(ids, n) receives the
// bases of the current record in chunks, on_record_end() follows each record that has at least one base (header
// lines and '\r' are skipped). Errors are mt::Error(Data) starting with `what` (e.g. "data.path"): a non-DNA letter
// names file:line:column, sequence before the first '>' header names file:line.
void read_fasta_dna(const std::string& path, const std::string& what,
                    const std::function<void(const uint8_t* ids, size_t n)>& on_tokens,
                    const std::function<void()>& on_record_end);

// In place: reverse the order and complement each base (A<->T, C<->G; N, PAD, EOD unchanged).
void reverse_complement(int32_t* ids, int64_t n);

}  // namespace mt::data
