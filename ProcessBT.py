"""Process the Amazon 'Beauty' data into data/bt/process and bt_files.dat (MIIR paper, sec. 4.2).

    python ProcessBT.py                       # raw files in data/bt/raw
    python ProcessBT.py -raw_dir DIR          # or anywhere else; -h for every flag
"""
import Preprocess

if __name__ == "__main__":
    Preprocess.main(token="bt", category="Beauty")
