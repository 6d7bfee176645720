"""Process the Amazon 'Toys_and_Games' data into data/tg/process and tg_files.dat (MIIR paper, sec. 4.2).

    python ProcessTG.py                       # raw files in data/tg/raw
    python ProcessTG.py -raw_dir DIR          # or anywhere else; -h for every flag
"""
import Preprocess

if __name__ == "__main__":
    Preprocess.main(token="tg", category="Toys_and_Games")
