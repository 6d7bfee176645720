"""Process the Amazon 'Sports_and_Outdoors' data into data/so/process and so_files.dat (MIIR paper, sec. 4.2).

    python ProcessSO.py                       # raw files in data/so/raw
    python ProcessSO.py -raw_dir DIR          # or anywhere else; -h for every flag
"""
import Preprocess

if __name__ == "__main__":
    Preprocess.main(token="so", category="Sports_and_Outdoors")
