// Converters: YOLO, COCO and VOC fixtures written by the test, read back through Dataset
// and checked box by box (pixel values worked out by hand below); bad source data; thread
// independence; untouched inputs; and the real coco128 when it is present.
#include "data/convert.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "data/codec.h"
#include "data/dataset.h"
#include "tests/data/data_fixtures.h"

namespace vt::data {
namespace {

using testing::expect_error;
using testing::gradient_image;
using testing::TempDir;
using testing::write_bytes;
using testing::write_text;

void expect_box(const Box& b, float x1, float y1, float x2, float y2, int cls) {
  EXPECT_NEAR(b.x1, x1, 1e-3);
  EXPECT_NEAR(b.y1, y1, 1e-3);
  EXPECT_NEAR(b.x2, x2, 1e-3);
  EXPECT_NEAR(b.y2, y2, 1e-3);
  EXPECT_EQ(b.cls, cls);
}

WriteOptions options(const std::string& out, Storage storage = Storage::kEncoded, int imgsz = 0,
                     int threads = 2) {
  WriteOptions o;
  o.out_dir = out;
  o.split = "train";
  o.storage = storage;
  o.imgsz = imgsz;
  o.shard_size = 3;
  o.threads = threads;
  return o;
}

// A YOLO dataset under root: images/{train,val}, labels/{train,val}, data.yaml.
//   a.jpg 64x48: a.txt has 2 good boxes (one partly outside), 4 invalid lines, 1 zero-area
//   b.png 40x30: empty label file;  c.jpg: no label file;  d.jpg 32x32: a polygon label
//   e.jpg: not an image;  f.jpg: truncated JPEG;  labels/train/orphan.txt: no image
//   val/v.jpg 20x10 with one box
void write_yolo(const std::string& root) {
  const std::vector<uint8_t> a = encode_jpeg(gradient_image(48, 64), 90);
  write_bytes(root + "/images/train/a.jpg", a);
  write_bytes(root + "/images/train/b.png", encode_png(gradient_image(30, 40)));
  write_bytes(root + "/images/train/c.jpg", encode_jpeg(gradient_image(16, 16), 90));
  write_bytes(root + "/images/train/d.jpg", encode_jpeg(gradient_image(32, 32), 90));
  write_text(root + "/images/train/e.jpg", "this is not an image");
  write_bytes(root + "/images/train/f.jpg", std::vector<uint8_t>(a.begin(), a.begin() + a.size() / 2));
  write_text(root + "/images/train/notes.md", "ignored: not an image");
  write_text(root + "/labels/train/a.txt",
             "0 0.5 0.5 0.25 0.5\n"    // 1: (24, 12, 40, 36)
             "1 0.95 0.5 0.2 0.2\n"    // 2: (54.4, 19.2, 67.2, 28.8), clipped to x2 = 64
             "x 0.5 0.5 0.1 0.1\n"     // 3: not numeric
             "5 0.5 0.5 0.1 0.1\n"     // 4: class out of range
             "0 0.5 0.5\n"             // 5: too few values
             "\n"                      // 6: blank, ignored
             "0 0.5 0.5 0 0.2\n"       // 7: zero width: dropped
             "1 0.5 0.5 -0.1 0.2\n");  // 8: negative width
  write_text(root + "/labels/train/b.txt", "");
  write_text(root + "/labels/train/d.txt", "1 0.25 0.25 0.75 0.25 0.5 0.75\n");  // polygon: (8, 8, 24, 24)
  write_text(root + "/labels/train/e.txt", "0 0.5 0.5 0.1 0.1\n");
  write_text(root + "/labels/train/orphan.txt", "0 0.5 0.5 0.1 0.1\n1 0.2 0.2 0.1 0.1\n");
  write_bytes(root + "/images/val/v.jpg", encode_jpeg(gradient_image(10, 20), 90));
  write_text(root + "/labels/val/v.txt", "1 0.5 0.5 0.5 0.5\n");  // (5, 2.5, 15, 7.5)
  write_text(root + "/names.txt", "cat\ndog\n");
  write_text(root + "/data.yaml",
             "path: .\ntrain: images/train\nval: images/val\nnames:\n  0: cat\n  1: dog\n");
}

TEST(ConvertYolo, DirectoriesEncoded) {
  TempDir src, out;
  write_yolo(src.path());
  const auto before = testing::snapshot(src.path());
  auto yolo = yolo_from_dirs(src / "images/train", src / "labels/train", read_class_names(src / "names.txt"));
  const Manifest m = convert(*yolo, options(out.path()));
  EXPECT_EQ(testing::snapshot(src.path()), before);  // inputs untouched, nothing added

  const ConvertReport& r = m.report;
  EXPECT_EQ(r.images_seen, 6);
  EXPECT_EQ(r.images_skipped, 2);
  ASSERT_EQ(r.skipped.size(), 2u);
  EXPECT_EQ(r.skipped[0].file, src / "images/train/e.jpg");
  EXPECT_NE(r.skipped[0].reason.find("not a JPEG or PNG"), std::string::npos) << r.skipped[0].reason;
  EXPECT_EQ(r.skipped[1].file, src / "images/train/f.jpg");
  EXPECT_NE(r.skipped[1].reason.find("JPEG"), std::string::npos) << r.skipped[1].reason;
  EXPECT_EQ(r.boxes_invalid, 4);
  EXPECT_EQ(r.boxes_clipped, 1);
  EXPECT_EQ(r.boxes_dropped, 1);
  EXPECT_EQ(r.boxes_orphaned, 2);
  std::vector<int64_t> bad_lines;
  for (const Issue& is : r.box_issues)
    if (is.file == src / "labels/train/a.txt") bad_lines.push_back(is.line);
  EXPECT_EQ(bad_lines, (std::vector<int64_t>{3, 4, 5, 8}));

  const Dataset ds = Dataset::open(out.path(), Verify::kFull);
  ASSERT_EQ(ds.size(), 4);
  EXPECT_EQ(ds.class_names(), (std::vector<std::string>{"cat", "dog"}));
  const Record a = ds.meta(0), b = ds.meta(1), c = ds.meta(2), d = ds.meta(3);
  EXPECT_EQ(a.file_name, "a.jpg");
  EXPECT_EQ(b.file_name, "b.png");
  EXPECT_EQ(c.file_name, "c.jpg");
  EXPECT_EQ(d.file_name, "d.jpg");
  EXPECT_EQ(a.orig_w, 64);
  EXPECT_EQ(a.orig_h, 48);
  EXPECT_EQ(b.orig_w, 40);
  ASSERT_EQ(a.boxes.size(), 2u);
  expect_box(a.boxes[0], 24, 12, 40, 36, 0);
  expect_box(a.boxes[1], 54.4f, 19.2f, 64, 28.8f, 1);
  EXPECT_TRUE(b.boxes.empty());  // empty label file
  EXPECT_TRUE(c.boxes.empty());  // no label file
  ASSERT_EQ(d.boxes.size(), 1u);
  expect_box(d.boxes[0], 8, 8, 24, 24, 1);
  // Encoded storage keeps the source bytes as they were.
  std::vector<uint8_t> bytes;
  ds.read_encoded(0, bytes);
  EXPECT_EQ(bytes, read_file(src / "images/train/a.jpg"));
}

TEST(ConvertYolo, RawStorageLetterboxesPixelsAndBoxes) {
  TempDir src, out;
  write_yolo(src.path());
  auto yolo = yolo_from_dirs(src / "images/train", src / "labels/train", {"cat", "dog"});
  convert(*yolo, options(out.path(), Storage::kRaw, 32));
  const Dataset ds = Dataset::open(out.path(), Verify::kFull);
  EXPECT_EQ(ds.imgsz(), 32);
  // a.jpg is 64x48 -> scale 0.5 -> 32x24, centred: pad (0, 4).
  const Record a = ds.meta(0);
  EXPECT_FLOAT_EQ(a.letterbox.scale, 0.5f);
  EXPECT_FLOAT_EQ(a.letterbox.pad_x, 0);
  EXPECT_FLOAT_EQ(a.letterbox.pad_y, 4);
  EXPECT_EQ(a.orig_w, 64);
  ASSERT_EQ(a.boxes.size(), 2u);
  expect_box(a.boxes[0], 12, 10, 20, 22, 0);
  expect_box(a.boxes[1], 27.2f, 13.6f, 32, 18.4f, 1);
  const std::vector<uint8_t> jpg = read_file(src / "images/train/a.jpg");
  const Image want = letterbox(decode_image(jpg.data(), jpg.size(), "a.jpg"), 32, nullptr);
  std::vector<uint8_t> got(32 * 32 * 3);
  ds.read_raw(0, got.data());
  EXPECT_EQ(got, want.rgb);
  EXPECT_EQ(got[0], 114);  // top padding row
}

TEST(ConvertYolo, DataYamlGivesOneDatasetPerSplit) {
  TempDir src, out;
  write_yolo(src.path());
  const auto sources = yolo_from_data_yaml(src / "data.yaml");
  ASSERT_EQ(sources.size(), 2u);
  EXPECT_EQ(sources[0].first, "train");
  EXPECT_EQ(sources[1].first, "val");
  WriteOptions opt = options(out / "val");
  opt.split = "val";
  convert(*sources[1].second, opt);
  const Dataset val = Dataset::open(out / "val", Verify::kFull);
  ASSERT_EQ(val.size(), 1);
  EXPECT_EQ(val.meta(0).file_name, "images/val/v.jpg");  // relative to the yaml's path:
  ASSERT_EQ(val.meta(0).boxes.size(), 1u);
  expect_box(val.meta(0).boxes[0], 5, 2.5f, 15, 7.5f, 1);
  EXPECT_EQ(sources[0].second->images.size(), 4u + 2u);  // notes.md is not listed
}

TEST(ConvertYolo, OutputDoesNotDependOnThreads) {
  TempDir src, one, many;
  write_yolo(src.path());
  auto yolo = yolo_from_dirs(src / "images/train", src / "labels/train", {"cat", "dog"});
  convert(*yolo, options(one.path(), Storage::kEncoded, 0, 1));
  convert(*yolo, options(many.path(), Storage::kEncoded, 0, 5));
  EXPECT_EQ(testing::snapshot(one.path()), testing::snapshot(many.path()));
}

TEST(ConvertYolo, AllCorruptFailsAndWritesNoManifest) {
  TempDir src, out;
  write_text(src / "images/x.jpg", "junk");
  write_text(src / "images/y.png", "more junk");
  std::filesystem::create_directories(src / "labels");
  auto yolo = yolo_from_dirs(src / "images", src / "labels", {"cat"});
  expect_error([&] { convert(*yolo, options(out.path())); }, {"no valid image", "x.jpg"});
  EXPECT_FALSE(std::filesystem::exists(out / "manifest.json"));
}

// COCO: category ids 3 (cat) and 1 (dog) become 0 = dog, 1 = cat (increasing id order).
TEST(ConvertCoco, BoxesCategoriesCrowdAndImagesWithoutAnnotations) {
  TempDir src, out;
  write_bytes(src / "images/img1.jpg", encode_jpeg(gradient_image(30, 40), 90));
  write_bytes(src / "images/sub/img2.png", encode_png(gradient_image(20, 20)));
  write_bytes(src / "images/img3.jpg", encode_jpeg(gradient_image(16, 16), 90));
  write_text(src / "instances.json", R"({
    "categories": [{"id": 3, "name": "cat"}, {"id": 1, "name": "dog"}],
    "images": [{"id": 11, "file_name": "img1.jpg", "width": 40, "height": 30},
               {"id": 12, "file_name": "sub/img2.png", "width": 20, "height": 20},
               {"id": 13, "file_name": "img3.jpg", "width": 16, "height": 16}],
    "annotations": [
      {"id": 1, "image_id": 11, "category_id": 3, "bbox": [10, 5, 20, 10], "iscrowd": 0},
      {"id": 2, "image_id": 11, "category_id": 1, "bbox": [30, 20, 15, 15], "iscrowd": 0},
      {"id": 3, "image_id": 11, "category_id": 1, "bbox": [0, 0, 5, 5], "iscrowd": 1},
      {"id": 4, "image_id": 12, "category_id": 1, "bbox": [1, 2, 3]},
      {"id": 5, "image_id": 12, "category_id": 7, "bbox": [1, 2, 3, 4]},
      {"id": 6, "image_id": 99, "category_id": 1, "bbox": [1, 2, 3, 4]},
      {"id": 7, "image_id": 12, "category_id": 3, "bbox": [2, 4, 6, 8]}]})");
  const auto before = testing::snapshot(src.path());
  for (Storage storage : {Storage::kEncoded, Storage::kRaw}) {
    const std::string dir = out / storage_name(storage);
    const Manifest m = convert(*coco_source(src / "instances.json", src / "images"),
                               options(dir, storage, storage == Storage::kRaw ? 20 : 0));
    EXPECT_EQ(m.report.boxes_crowd, 1);
    EXPECT_EQ(m.report.boxes_invalid, 2);
    EXPECT_EQ(m.report.boxes_orphaned, 1);
    EXPECT_EQ(m.report.boxes_clipped, 1);
    const Dataset ds = Dataset::open(dir, Verify::kFull);
    EXPECT_EQ(ds.class_names(), (std::vector<std::string>{"dog", "cat"}));
    ASSERT_EQ(ds.size(), 3);
    const Record a = ds.meta(0), b = ds.meta(1), c = ds.meta(2);
    EXPECT_EQ(a.image_id, 11);
    EXPECT_EQ(b.file_name, "sub/img2.png");
    EXPECT_EQ(c.image_id, 13);
    EXPECT_TRUE(c.boxes.empty());
    ASSERT_EQ(a.boxes.size(), 2u);
    ASSERT_EQ(b.boxes.size(), 1u);
    if (storage == Storage::kEncoded) {
      expect_box(a.boxes[0], 10, 5, 30, 15, 1);
      expect_box(a.boxes[1], 30, 20, 40, 30, 0);  // clipped to the 40x30 image
      expect_box(b.boxes[0], 2, 4, 8, 12, 1);
    } else {
      // 40x30 into 20: scale 0.5, 20x15, pad_y = (20 - 15) / 2 = 2 (integer centring).
      EXPECT_FLOAT_EQ(a.letterbox.pad_y, 2);
      expect_box(a.boxes[0], 5, 4.5f, 15, 9.5f, 1);
      expect_box(a.boxes[1], 15, 12, 20, 17, 0);
      expect_box(b.boxes[0], 2, 4, 8, 12, 1);  // 20x20 into 20: identity
    }
  }
  EXPECT_EQ(testing::snapshot(src.path()), before);
}

// VOC: 1-based inclusive pixel boxes; xmin 1 is the first pixel's left edge, x = 0.
const char* kVocXml1 = R"(<annotation><filename>000001.jpg</filename>
  <size><width>40</width><height>30</height><depth>3</depth></size>
  <object><name>dog</name><difficult>0</difficult>
    <bndbox><xmin>1</xmin><ymin>1</ymin><xmax>10</xmax><ymax>20</ymax></bndbox></object>
  <object><name>person</name><difficult>1</difficult>
    <bndbox><xmin>5</xmin><ymin>6</ymin><xmax>40</xmax><ymax>30</ymax></bndbox></object>
  <object><name>unicorn</name>
    <bndbox><xmin>2</xmin><ymin>2</ymin><xmax>4</xmax><ymax>4</ymax></bndbox></object>
</annotation>)";

void write_voc(const std::string& root) {
  write_bytes(root + "/JPEGImages/000001.jpg", encode_jpeg(gradient_image(30, 40), 90));
  write_bytes(root + "/JPEGImages/000002.jpg", encode_jpeg(gradient_image(20, 20), 90));
  write_text(root + "/Annotations/000001.xml", kVocXml1);
  write_text(root + "/Annotations/000002.xml", "<annotation><filename>000002.jpg</filename></annotation>");
  write_text(root + "/ImageSets/Main/train.txt", "000001\n000002\n000003\n");  // 000003 has no XML
}

TEST(ConvertVoc, RootWithStandardClasses) {
  TempDir src, out;
  write_voc(src.path());
  const auto before = testing::snapshot(src.path());
  const Manifest m = convert(*voc_from_root(src.path(), "train", {}), options(out.path()));
  EXPECT_EQ(testing::snapshot(src.path()), before);
  EXPECT_EQ(m.report.images_skipped, 1);
  EXPECT_NE(m.report.skipped[0].file.find("000003.xml"), std::string::npos);
  EXPECT_EQ(m.report.boxes_invalid, 1);  // unicorn
  const Dataset ds = Dataset::open(out.path(), Verify::kFull);
  EXPECT_EQ(ds.class_names(), voc_class_names());
  ASSERT_EQ(ds.size(), 2);
  const Record a = ds.meta(0);
  EXPECT_EQ(a.file_name, "000001.jpg");
  EXPECT_EQ(a.image_id, 1);
  ASSERT_EQ(a.boxes.size(), 2u);
  expect_box(a.boxes[0], 0, 0, 10, 20, 11);  // dog
  expect_box(a.boxes[1], 4, 5, 40, 30, 14);  // person, difficult: kept
  EXPECT_TRUE(ds.meta(1).boxes.empty());
}

TEST(ConvertVoc, DirectoriesWithOwnNames) {
  TempDir src, out;
  write_voc(src.path());
  write_text(src / "names.txt", "person\ndog\n");
  convert(*voc_from_dirs(src / "JPEGImages", src / "Annotations", read_class_names(src / "names.txt")),
          options(out.path()));
  const Dataset ds = Dataset::open(out.path());
  ASSERT_EQ(ds.size(), 2);
  const Record a = ds.meta(0);
  ASSERT_EQ(a.boxes.size(), 2u);
  expect_box(a.boxes[0], 0, 0, 10, 20, 1);
  expect_box(a.boxes[1], 4, 5, 40, 30, 0);
}

// The real coco128 (YOLO format). Its train split has 128 images and 128 label files, but
// two images have no label file (no objects) and two label files (000000000656.txt: 3
// boxes, 000000000659.txt: 9) have no image. 941 label lines = 929 boxes + 12 orphaned.
TEST(ConvertYolo, Coco128) {
  const std::string yaml = std::string(VT_COCO128_DIR) + "/data.yaml";
  if (!std::filesystem::exists(yaml)) GTEST_SKIP() << "coco128 not found at " << VT_COCO128_DIR;
  TempDir out;
  std::map<std::string, Manifest> m;
  for (auto& [split, src] : yolo_from_data_yaml(yaml)) {
    WriteOptions opt = options(out / split);
    opt.split = split;
    opt.shard_size = 100;
    m[split] = convert(*src, opt);
  }
  ASSERT_EQ(m.size(), 2u);
  EXPECT_EQ(m["train"].total_images, 128);
  EXPECT_EQ(m["val"].total_images, 128);
  EXPECT_EQ(m["train"].total_boxes, 929);
  EXPECT_EQ(m["train"].report.boxes_orphaned, 12);
  EXPECT_EQ(m["train"].total_boxes + m["train"].report.boxes_orphaned, 941);
  EXPECT_EQ(m["val"].total_boxes, 898);
  EXPECT_EQ(m["val"].report.boxes_orphaned, 0);
  for (const char* split : {"train", "val"}) {
    EXPECT_EQ(m[split].report.images_skipped, 0);
    EXPECT_EQ(m[split].report.boxes_invalid, 0);
    EXPECT_EQ(m[split].report.boxes_dropped, 0);
    const Dataset ds = Dataset::open(out / split, Verify::kFull);
    EXPECT_EQ(ds.class_names().size(), 80u);
    EXPECT_EQ(ds.shards().size(), 2u);
  }
}

}  // namespace
}  // namespace vt::data
